/** What keepalive needs of a connection. */
export interface PingableConnection {
  readonly destroyed: boolean;
  ping(cb: (err: Error | null) => void): void;
  once(event: "close", listener: () => void): unknown;
}

/**
 * Sends a PING every `intervalMs` (0: none); calls `onTimeout` when one stays unanswered for
 * `timeoutMs` (0: PINGs are sent, but an unanswered one never ends the connection).
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
  let awaiting = false;
  const interval = setInterval(() => {
    if (session.destroyed || deadline !== undefined || awaiting) return;
    if (!(timeoutMs > 0)) {
      // No deadline: the next PING waits for this one's ACK, so an unanswering peer costs one.
      awaiting = true;
      session.ping(() => {
        awaiting = false;
      });
      return;
    }
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
