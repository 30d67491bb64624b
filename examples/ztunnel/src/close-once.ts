// One close for every caller of a long-lived proxy, and a promise that settles with it.

/** What {@link closeOnce} returns. */
export interface CloseOnce {
  /** Runs the teardown on the first call; every call returns the same promise. */
  close(): Promise<void>;
  /**
   * Settles when the teardown has run, whoever started it: resolves, or rejects as `close()` does.
   * Unobserved rejections are not reported: `close()` reports the failure to whoever called it.
   */
  readonly closed: Promise<void>;
}

/** Wraps `teardown` so it runs once, on the first `close()`, and `closed` follows it. */
export function closeOnce(teardown: () => Promise<void>): CloseOnce {
  let closing: Promise<void> | undefined;
  let settle: { resolve(): void; reject(err: unknown): void } | undefined;
  const closed = new Promise<void>((resolve, reject) => {
    settle = { resolve, reject };
  });
  closed.catch(() => {});
  return {
    close: () => {
      closing ??= teardown().then(
        () => settle?.resolve(),
        (err: unknown) => {
          settle?.reject(err);
          throw err;
        },
      );
      return closing;
    },
    closed,
  };
}
