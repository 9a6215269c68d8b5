// Keeps one failing part from blanking the page; retries when its input changes.

import { Component, type ReactNode } from 'react';

interface Props {
  children: ReactNode;
  /** A new value clears the error and renders the children again. */
  resetKey: unknown;
  what: string;
}
interface BoundaryState {
  error: Error | null;
  key: unknown;
}

export class ErrorBoundary extends Component<Props, BoundaryState> {
  override state: BoundaryState = { error: null, key: undefined };

  static getDerivedStateFromError(error: Error): Partial<BoundaryState> {
    return { error };
  }

  static getDerivedStateFromProps(props: Props, state: BoundaryState): Partial<BoundaryState> | null {
    if (props.resetKey !== state.key) return { error: null, key: props.resetKey };
    return null;
  }

  override componentDidCatch(error: Error): void {
    console.error(`rusm: the ${this.props.what} failed to render`, error);
  }

  override render() {
    if (this.state.error) {
      return (
        <p className="error" role="alert">
          The {this.props.what} could not be shown ({this.state.error.message}); it is retried with the next update.
        </p>
      );
    }
    return this.props.children;
  }
}
