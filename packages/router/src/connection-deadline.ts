/**
 * The header-read deadline of one downstream connection. Node's own `headersTimeout` never runs for
 * streams handed to a server with `emit("connection")` (its checker starts on `listen`), and tunnel
 * streams have no socket timeouts, so the handler keeps this timer itself.
 */
export class ConnectionDeadline {
  #active = 0;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  readonly #fire = (): void => {
    this.#timer = undefined;
    if (this.#active === 0 && !this.#stopped) this.onExpire();
  };

  /** `ms` of 0 disables the deadline. */
  constructor(
    private readonly ms: number,
    private readonly onExpire: () => void,
  ) {
    this.#arm();
  }

  /**
   * A request head is complete: no deadline while it is in flight. The timer is left to run (a timer
   * that fires with a request in flight does nothing), so a keep-alive connection re-arms the same
   * timer once per request instead of making a new one.
   */
  begin(): void {
    this.#active++;
  }

  /** A request finished: once none is in flight, the next head must arrive within the deadline. */
  end(): void {
    if (this.#active > 0) this.#active--;
    if (this.#active === 0) this.#arm();
  }

  /** The connection closed, or was handed over to something with deadlines of its own. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Starts the deadline over from now. */
  #arm(): void {
    if (this.ms <= 0 || this.#stopped) return;
    if (this.#timer === undefined) this.#timer = setTimeout(this.#fire, this.ms);
    else this.#timer.refresh();
  }
}
