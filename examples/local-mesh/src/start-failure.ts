// Turns an error from starting the mesh into one line a person can act on. A busy address is the usual
// cause (another demo still running, or an Istio install on the same ports), so it is named exactly.

interface NodeLikeError {
  code?: unknown;
  address?: unknown;
  port?: unknown;
  message?: unknown;
  cause?: unknown;
}

/** Every error in the `cause` chain, outermost first (bounded, in case of a cycle). */
function causeChain(err: unknown): NodeLikeError[] {
  const chain: NodeLikeError[] = [];
  let current = err;
  while (current !== null && typeof current === "object" && chain.length < 16) {
    chain.push(current as NodeLikeError);
    current = (current as NodeLikeError).cause;
  }
  return chain;
}

/** The `ip:port` a failed listen was for, from the error's fields or from its message. */
function busyAddress(chain: NodeLikeError[]): string | undefined {
  for (const e of chain) {
    if (e.code === "EADDRINUSE" && typeof e.address === "string" && typeof e.port === "number")
      return e.address.includes(":") ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
    const message = typeof e.message === "string" ? e.message : "";
    const match = /EADDRINUSE[^\n]*?address already in use (\S+?)(?=[\]\s,]|$)/.exec(message);
    if (match?.[1] !== undefined) return match[1];
  }
  return undefined;
}

/** One line saying what went wrong and what to do about it. */
export function describeStartFailure(err: unknown): string {
  const chain = causeChain(err);
  const address = busyAddress(chain);
  if (address !== undefined) {
    const port = address.slice(address.lastIndexOf(":") + 1);
    return (
      `${address} is already in use (is another demo still running?). Stop whatever listens there ` +
      `(ss -ltnp 'sport = :${port}' shows it), or move the demo with --control-plane or --node-ip-prefix.`
    );
  }
  if (chain.some((e) => e.code === "EADDRNOTAVAIL"))
    return "an address the demo listens on does not exist on this machine; the demo needs 127.0.0.0/8 on the loopback interface.";
  const messages = chain.map((e) => (typeof e.message === "string" ? e.message : String(e))).filter(Boolean);
  return `the mesh did not start: ${messages.join(": ") || String(err)}`;
}
