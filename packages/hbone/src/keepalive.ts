/** What keepalive needs of a connection. */
export interface PingableConnection {
  readonly destroyed: boolean;
  ping(cb: (err: Error | null) => void): void;
  once(event: "close", listener: () => void): unknown;
}

/**
 * Sends a PING every `intervalMs`; calls `onTimeout` when one stays unanswered for `timeoutMs`.
 * Timers are unref'd so an idle pool never keeps the process alive.
 */
export function startKeepalive(
  session: PingableConnection,
  intervalMs: number,
  timeoutMs: number,
  onTimeout: () => void,
): void {
  if (!(intervalMs > 0)) return;
  let deadline: NodeJS.Timeout | undefined;
  const interval = setInterval(() => {
    if (session.destroyed || deadline !== undefined) return;
    deadline = setTimeout(() => {
      clearInterval(interval);
      onTimeout();
    }, timeoutMs);
    deadline.unref();
    session.ping((err) => {
      if (err) return;
      clearTimeout(deadline);
      deadline = undefined;
    });
  }, intervalMs);
  interval.unref();
  session.once("close", () => {
    clearInterval(interval);
    clearTimeout(deadline);
  });
}
