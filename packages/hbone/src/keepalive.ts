import type { Http2Session } from "node:http2";

/**
 * Sends a PING every `intervalMs`; calls `onTimeout` when one stays unanswered for `timeoutMs`.
 * Timers are unref'd so an idle pool never keeps the process alive.
 */
export function startKeepalive(
  session: Http2Session,
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
    try {
      session.ping((err) => {
        if (err) return;
        clearTimeout(deadline);
        deadline = undefined;
      });
    } catch {
      // Too many outstanding pings or a closing session: the deadline decides.
    }
  }, intervalMs);
  interval.unref();
  session.once("close", () => {
    clearInterval(interval);
    clearTimeout(deadline);
  });
}
