import { describe, expect, it } from 'vitest';
import {
  formatBytes,
  formatClock,
  formatCount,
  formatMicros,
  formatPercent,
  formatRate,
  formatRatio,
  NONE,
} from './format';

describe('formatRate (the units of rusm bench)', () => {
  it.each([
    [4358817.9, '4.36M'],
    [96088.7, '96.1k'],
    [10000, '10.0k'],
    [9999, '9999'],
    [812.4, '812'],
    [2.54, '2.5'],
    [0, '0'],
    [2.5e9, '2.50G'],
  ])('%f -> %s', (v, s) => expect(formatRate(v)).toBe(s));
  it('prints absent and non-finite values as a dash', () => {
    expect(formatRate(undefined)).toBe(NONE);
    expect(formatRate(null)).toBe(NONE);
    expect(formatRate(NaN)).toBe(NONE);
    expect(formatRate(Infinity)).toBe(NONE);
  });
});

describe('other units', () => {
  it('formats microseconds', () => {
    expect(formatMicros(0.22)).toBe('0.22 µs');
    expect(formatMicros(56.34)).toBe('56.3 µs');
    expect(formatMicros(560)).toBe('560 µs');
    expect(formatMicros(5600)).toBe('5.60 ms');
    expect(formatMicros(2.5e6)).toBe('2.50 s');
    expect(formatMicros(undefined)).toBe(NONE);
  });
  it('formats bytes in binary units', () => {
    expect(formatBytes(432.4)).toBe('432 B');
    expect(formatBytes(8.5)).toBe('8.5 B');
    expect(formatBytes(8448)).toBe('8.25 KiB');
    expect(formatBytes(20 * 1024 * 1024)).toBe('20.0 MiB');
    expect(formatBytes(null)).toBe(NONE);
  });
  it('formats ratios', () => {
    expect(formatRatio(45.3624)).toBe('45.4×');
    expect(formatRatio(1.234)).toBe('1.23×');
    expect(formatRatio(0.0312)).toBe('0.031×');
    expect(formatRatio(250)).toBe('250×');
    expect(formatRatio(undefined)).toBe(NONE);
  });
  it('formats counts, percentages and clock times', () => {
    expect(formatCount(1234567)).toBe('1,234,567');
    expect(formatCount(undefined)).toBe(NONE);
    expect(formatPercent(0.372)).toBe('37%');
    expect(formatClock(new Date(2024, 0, 2, 9, 5, 7).getTime())).toBe('09:05:07');
  });
});
