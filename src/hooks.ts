/**
 * React hooks shared by the views.
 */
import type { ISignal } from '@lumino/signaling';
import { useEffect, useState } from 'react';

/**
 * Re-render when `signal` fires, at most once per animation frame: hundreds
 * of progress events a second become one render per frame.
 */
export function useSignalFrame<T>(signal: ISignal<T, unknown>): number {
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let frame = 0;
    const onChange = () => {
      if (frame === 0) {
        frame = requestAnimationFrame(() => {
          frame = 0;
          setTick(t => t + 1);
        });
      }
    };
    signal.connect(onChange);
    return () => {
      signal.disconnect(onChange);
      if (frame !== 0) {
        cancelAnimationFrame(frame);
      }
    };
  }, [signal]);
  return tick;
}

/** The current time, refreshed every `interval` ms while `active`. */
export function useNow(active: boolean, interval = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!active) {
      return;
    }
    setNow(Date.now());
    const timer = setInterval(() => setNow(Date.now()), interval);
    return () => clearInterval(timer);
  }, [active, interval]);
  return now;
}
