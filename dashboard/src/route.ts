// Hash routing: "#/" the benchmarks, "#/observer" the observer.

import { useEffect, useState } from 'react';

export type Route = 'benchmarks' | 'observer';

export function routeOf(hash: string): Route {
  const h = hash.replace(/^#\/?/, '').replace(/\/+$/, '');
  return h === 'observer' ? 'observer' : 'benchmarks';
}

export function useRoute(): Route {
  const [route, setRoute] = useState<Route>(() => routeOf(window.location.hash));
  useEffect(() => {
    const on = () => setRoute(routeOf(window.location.hash));
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}
