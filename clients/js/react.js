// @sidecast/client/react: the client as a React hook. The only file of the
// package that imports React (an optional peer dependency): pages without
// React import '@sidecast/client' and never load it.

import React from 'react';
import { subscribe } from './index.js';

/**
 * Subscribes while the component is mounted; returns the latest event, the
 * subscription's state and the last error: `{ event, state, error }`.
 * `options` are `subscribe`'s (without `topics`); its callbacks are called
 * as well, and may change between renders without reopening the stream. A
 * change of `topics`, `url`, `events`, `token`, `mode`, `withCredentials`
 * or `lastEventId` closes the subscription and opens a new one.
 */
export function useSidecast(topics, options = {}) {
  const [snap, setSnap] = React.useState({ event: null, state: 'connecting', error: null });
  const latest = React.useRef(options);
  latest.current = options;
  const key = JSON.stringify([
    topics ?? [],
    options.url ?? '/events',
    options.events ?? [],
    options.token ?? null,
    options.mode ?? 'auto',
    !!options.withCredentials,
    options.lastEventId ?? null,
  ]);

  React.useEffect(() => {
    const o = latest.current;
    const sub = subscribe({
      ...o,
      topics: topics ?? [],
      getToken: o.getToken ? () => latest.current.getToken() : undefined,
      onEvent: (event) => {
        setSnap((s) => ({ ...s, event }));
        latest.current.onEvent?.(event);
      },
      onReset: (reset) => latest.current.onReset?.(reset),
      onState: (state, info) => {
        setSnap((s) => ({ ...s, state, error: state === 'open' ? null : s.error }));
        latest.current.onState?.(state, info);
      },
      onError: (error) => {
        setSnap((s) => ({ ...s, error }));
        latest.current.onError?.(error);
      },
    });
    return () => sub.close();
    // `key` stands for everything the subscription is opened with.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);

  return snap;
}
