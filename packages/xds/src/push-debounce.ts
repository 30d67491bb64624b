// When the server pushes cache changes: a trailing window (istiod's PILOT_DEBOUNCE_AFTER as a fixed
// delay from the first change) or a leading edge (a change after a quiet window goes out on the next
// event-loop turn; changes that follow within the window are merged into one push at its end).

/** Options of {@link PushDebouncer}. */
export interface PushDebounceOptions {
  /** Window length in ms. */
  windowMs: number;
  /** Push a change at once when nothing was pushed in the last window. */
  leadingEdge: boolean;
  /** Called when the pending changes should go out. */
  flush: () => void;
}

/**
 * Schedules the flush of pending changes. At most one flush per window while changes keep coming,
 * in both modes; the leading edge only removes the wait for a change that arrives after a quiet window.
 */
export class PushDebouncer {
  private readonly options: PushDebounceOptions;
  private timer: NodeJS.Timeout | undefined;
  private lastFlushAt = Number.NEGATIVE_INFINITY;
  private stopped = false;

  constructor(options: PushDebounceOptions) {
    this.options = options;
  }

  /** A change is pending: schedules a flush unless one is already scheduled. */
  changed(): void {
    if (this.timer !== undefined || this.stopped) return;
    const { windowMs, leadingEdge } = this.options;
    // Wall clock (not performance.now) so that fake timers in tests move it too.
    const delay = leadingEdge ? Math.max(0, this.lastFlushAt + windowMs - Date.now()) : windowMs;
    // A delay of 0 still waits for the next turn: the writes of one synchronous batch go out together.
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.options.flush();
    }, delay);
  }

  /** Records that pending changes went out (by the timer or a caller), and cancels the timer. */
  flushed(hadChanges: boolean): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (hadChanges) this.lastFlushAt = Date.now();
  }

  /** Cancels a scheduled flush; later changes schedule nothing. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
