// Following the end of a scrolling box (a task's log, a conversation) as it
// grows, unless the user scrolled up to read: then the box stays put until
// they scroll back to the end or press "Jump to latest" (`setFollow(true)`).
import type { RefObject } from "preact";
import { useLayoutEffect, useRef, useState } from "preact/hooks";

/**
 * `box` kept at its end while following. `slack`: how many pixels from the
 * end still count as at the end; `redraw`: what, when it changes, may have
 * grown the box (every render when omitted); `onUserScroll`: told where a
 * scroll by the user (not one of ours) left the box.
 */
export function useFollowEnd(
  box: RefObject<HTMLElement>,
  slack: number,
  redraw?: unknown[],
  onUserScroll?: (top: number) => void,
): { follow: boolean; setFollow: (follow: boolean) => void; onScroll: () => void } {
  const [follow, setFollow] = useState(true);
  // Set while the box scrolls because we moved it: that scroll is not the user's.
  const ours = useRef(false);
  useLayoutEffect(
    () => {
      const el = box.current;
      if (el && follow) {
        ours.current = true;
        el.scrollTop = el.scrollHeight;
      }
    },
    redraw ? [...redraw, follow] : undefined,
  );
  const onScroll = () => {
    const el = box.current;
    if (!el) return;
    if (ours.current) {
      ours.current = false;
      return;
    }
    setFollow(el.scrollTop + el.clientHeight >= el.scrollHeight - slack);
    onUserScroll?.(el.scrollTop);
  };
  return { follow, setFollow, onScroll };
}
