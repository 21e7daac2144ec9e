// Types of @sidecast/client/react (react.js).

import type { SidecastError, SidecastEvent, State, SubscribeOptions } from './index.js';

export type UseSidecastOptions = Omit<SubscribeOptions, 'topics' | 'onEvent'> & {
  onEvent?: SubscribeOptions['onEvent'];
};

export interface SidecastSnapshot {
  /** The latest event, or null before the first. */
  event: SidecastEvent | null;
  state: State;
  /** The last failure; null again once the stream is open. */
  error: SidecastError | null;
}

/** Subscribes while the component is mounted. */
export declare function useSidecast(topics: string[], options?: UseSidecastOptions): SidecastSnapshot;
