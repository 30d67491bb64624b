/**
 * A whole-string regular expression matcher whose time is linear in the input: the pattern becomes a
 * small program of instructions and every instruction is stepped at most once per input position (a
 * Thompson NFA simulation). Route regexes run here when a backtracking JavaScript regex could take
 * exponential or high-polynomial time on them.
 */

/** A compiled route regular expression: RE2 syntax, always matched against the whole value. */
export interface RouteRegex {
  /** The pattern as written. */
  readonly source: string;
  /** Whether `input` as a whole matches. */
  test(input: string): boolean;
}

/** Empty-width assertions. */
export type AssertionKind =
  | "text-start" // ^ without (?m), \A
  | "text-end" // $ without (?m), \z
  | "line-start" // ^ with (?m): start of text or after \n
  | "line-end" // $ with (?m): end of text or before \n
  | "word-boundary" // \b (ASCII word characters)
  | "not-word-boundary"; // \B

/** A parsed pattern. Classes carry JavaScript (`v` flag) class source for one code point. */
export type RegexNode =
  | { readonly type: "empty" }
  | { readonly type: "char"; readonly cp: number }
  | { readonly type: "class"; readonly source: string }
  | { readonly type: "assert"; readonly kind: AssertionKind }
  | { readonly type: "concat"; readonly items: readonly RegexNode[] }
  | { readonly type: "alternate"; readonly items: readonly RegexNode[] }
  | { readonly type: "repeat"; readonly body: RegexNode; readonly min: number; readonly max: number };

/**
 * Most instructions a pattern may compile to (counted repetition is expanded: `.{0,1000}` takes 2002).
 * The work per input code point is at most about this many steps.
 */
export const MAX_PROGRAM_SIZE = 2500;

const CHAR = 0;
const CLASS = 1;
const SPLIT = 2;
const JUMP = 3;
const ASSERT = 4;
const MATCH = 5;

const ASSERTIONS: readonly AssertionKind[] = [
  "text-start",
  "text-end",
  "line-start",
  "line-end",
  "word-boundary",
  "not-word-boundary",
];

/** One code point class: a table for ASCII, a sticky regex for the rest. */
interface CodePointClass {
  ascii: Uint8Array;
  rest: RegExp;
}

/** Thrown (with a reason) when the program would exceed MAX_PROGRAM_SIZE. */
export class ProgramTooLargeError extends Error {}

class ProgramBuilder {
  readonly op: number[] = [];
  readonly x: number[] = [];
  readonly y: number[] = [];
  readonly classes: CodePointClass[] = [];
  private readonly classIds = new Map<string, number>();

  constructor(private readonly fold: boolean) {}

  private emit(op: number, x = 0, y = 0): number {
    if (this.op.length >= MAX_PROGRAM_SIZE) throw new ProgramTooLargeError();
    this.op.push(op);
    this.x.push(x);
    this.y.push(y);
    return this.op.length - 1;
  }

  private classId(source: string): number {
    let id = this.classIds.get(source);
    if (id === undefined) {
      const flags = this.fold ? "iv" : "v";
      const whole = new RegExp(`^${source}$`, flags);
      const ascii = new Uint8Array(128);
      for (let cp = 0; cp < 128; cp++) ascii[cp] = whole.test(String.fromCharCode(cp)) ? 1 : 0;
      id = this.classes.length;
      this.classes.push({ ascii, rest: new RegExp(source, `${flags}y`) });
      this.classIds.set(source, id);
    }
    return id;
  }

  compile(node: RegexNode): void {
    switch (node.type) {
      case "empty":
        return;
      case "char":
        if (this.fold && !caseless(node.cp)) this.emit(CLASS, this.classId(classLiteral(node.cp)));
        else this.emit(CHAR, node.cp);
        return;
      case "class":
        this.emit(CLASS, this.classId(node.source));
        return;
      case "assert":
        this.emit(ASSERT, ASSERTIONS.indexOf(node.kind));
        return;
      case "concat":
        for (const item of node.items) this.compile(item);
        return;
      case "alternate": {
        // split L1, next; L1: a; jump end; next: split L2, next2; ... last: z; end:
        const jumps: number[] = [];
        for (let k = 0; k < node.items.length; k++) {
          const item = node.items[k] as RegexNode;
          if (k === node.items.length - 1) {
            this.compile(item);
            break;
          }
          const split = this.emit(SPLIT);
          this.x[split] = split + 1;
          this.compile(item);
          jumps.push(this.emit(JUMP));
          this.y[split] = this.op.length;
        }
        for (const j of jumps) this.x[j] = this.op.length;
        return;
      }
      case "repeat": {
        const { body, min, max } = node;
        for (let k = 0; k < min; k++) this.compile(body);
        if (max === Number.POSITIVE_INFINITY) {
          // loop: split body, out; body; jump loop
          const loop = this.emit(SPLIT);
          this.x[loop] = loop + 1;
          this.compile(body);
          this.emit(JUMP, loop);
          this.y[loop] = this.op.length;
          return;
        }
        // (body(body(...)?)?)? for the optional copies: every exit jumps to the end.
        const splits: number[] = [];
        for (let k = min; k < max; k++) {
          const split = this.emit(SPLIT);
          this.x[split] = split + 1;
          splits.push(split);
          this.compile(body);
        }
        for (const s of splits) this.y[s] = this.op.length;
        return;
      }
    }
  }

  finish(): void {
    this.emit(MATCH);
  }
}

function caseless(cp: number): boolean {
  return cp < 0x80 && !((cp >= 0x41 && cp <= 0x5a) || (cp >= 0x61 && cp <= 0x7a));
}

/** A case-sensitive code point as a one-member `v`-mode class (folded by the `i` flag). */
function classLiteral(cp: number): string {
  return `[\\u{${cp.toString(16)}}]`;
}

/** What an assertion needs to know of a code point: 0 none (either end of the text), 1 \n, 2 word, 3 other. */
function kindOf(cp: number): number {
  if (cp === -1) return 0;
  if (cp === 0x0a) return 1;
  return (cp >= 0x30 && cp <= 0x39) || (cp >= 0x41 && cp <= 0x5a) || (cp >= 0x61 && cp <= 0x7a) || cp === 0x5f
    ? 2
    : 3;
}

/** Whether assertion `kind` holds between code points of kinds `before` and `after`. */
function assertionHolds(kind: number, before: number, after: number): boolean {
  switch (kind) {
    case 0:
      return before === 0;
    case 1:
      return after === 0;
    case 2:
      return before <= 1;
    case 3:
      return after <= 1;
    case 4:
      return (before === 2) !== (after === 2);
    default:
      return (before === 2) === (after === 2);
  }
}

/**
 * A cached set of threads: the instructions to continue from at some input position (before
 * following jumps, splits and assertions), and the kind of the code point before it.
 */
interface DfaState {
  readonly kernel: Int32Array;
  readonly before: number;
  /** The state after each ASCII code point, filled in as met. */
  readonly next: (DfaState | undefined)[];
  /** Whether the input may end here: -1 not known yet, 0 no, 1 yes. */
  accepts: number;
}

/** Cached states per pattern; past this, the rest of an input is simulated without caching. */
const MAX_DFA_STATES = 64;

/**
 * A pattern compiled for linear-time whole-string matching. ASCII input runs on cached sets of
 * threads (a lazily built DFA, at most MAX_DFA_STATES states); other input, and inputs that would
 * need more states, run the thread simulation itself. Either way the work per input code point is
 * bounded by the program size and a match allocates nothing beyond buffers of program size.
 */
export class LinearRegex implements RouteRegex {
  private readonly op: Uint8Array;
  private readonly x: Int32Array;
  private readonly y: Int32Array;
  private readonly classes: readonly CodePointClass[];
  /** Thread lists: the closure at a position, and the one being built for the next. */
  private readonly current: Int32Array;
  private readonly spare: Int32Array;
  private readonly stack: Int32Array;
  private readonly seen: Uint32Array;
  private generation = 0;
  private readonly states = new Map<string, DfaState>();
  private readonly start: DfaState;
  /** The program has assertions (else states need not tell what came before). */
  private readonly assertions: boolean;
  /** Work done by the last `test` (for tests: bounded by program size times input length). */
  steps = 0;

  /**
   * @param fold `(?i)` over the whole pattern.
   * @throws ProgramTooLargeError past MAX_PROGRAM_SIZE instructions.
   */
  constructor(
    readonly source: string,
    node: RegexNode,
    fold: boolean,
  ) {
    const b = new ProgramBuilder(fold);
    b.compile(node);
    b.finish();
    const n = b.op.length;
    this.op = Uint8Array.from(b.op);
    this.x = Int32Array.from(b.x);
    this.y = Int32Array.from(b.y);
    this.classes = b.classes;
    this.current = new Int32Array(n);
    this.spare = new Int32Array(n);
    // Every instruction is entered once per position and pushes at most two successors.
    this.stack = new Int32Array(2 * n + 1);
    this.seen = new Uint32Array(n);
    this.assertions = b.op.includes(ASSERT);
    this.start = this.state(Int32Array.of(0), 0) as DfaState;
  }

  /** Number of instructions. */
  get programSize(): number {
    return this.op.length;
  }

  test(input: string): boolean {
    const length = input.length;
    let state = this.start;
    this.steps = 0;
    for (let i = 0; i < length; i++) {
      const c = input.charCodeAt(i);
      let next = c < 128 ? state.next[c] : undefined;
      if (next === undefined) {
        next = c < 128 ? this.transition(state, c) : undefined;
        if (next === undefined) {
          this.steps += i;
          return this.simulate(state.kernel, state.before, input, i);
        }
      }
      if (next.kernel.length === 0) {
        this.steps += i + 1;
        return false;
      }
      state = next;
    }
    this.steps += length;
    if (state.accepts === -1) {
      this.nextGeneration();
      const count = this.closure(state.kernel, state.before, 0);
      state.accepts = 0;
      for (let t = 0; t < count; t++) if (this.op[this.current[t] as number] === MATCH) state.accepts = 1;
    }
    return state.accepts === 1;
  }

  /** The cached state for `kernel` (sorted) after a code point of kind `before`; undefined when full. */
  private state(kernel: Int32Array, before: number): DfaState | undefined {
    const key = `${before}:${kernel.join(",")}`;
    let state = this.states.get(key);
    if (state === undefined) {
      if (this.states.size >= MAX_DFA_STATES) return undefined;
      state = { kernel, before, next: new Array<DfaState | undefined>(128).fill(undefined), accepts: -1 };
      this.states.set(key, state);
    }
    return state;
  }

  /**
   * The state after ASCII code point `c` from `from`, cached; undefined when the cache is full. Sets
   * `steps` to the work done.
   */
  private transition(from: DfaState, c: number): DfaState | undefined {
    const { op, x, classes, seen } = this;
    const kind = kindOf(c);
    this.nextGeneration();
    // Without assertions `before` and `after` are never read.
    const count = this.closure(from.kernel, from.before, kind);
    this.nextGeneration();
    const generation = this.generation;
    const kernel: number[] = [];
    for (let t = 0; t < count; t++) {
      const pc = this.current[t] as number;
      const o = op[pc];
      const ok =
        o === CHAR ? x[pc] === c : o === CLASS && (classes[x[pc] as number] as CodePointClass).ascii[c] === 1;
      if (ok && seen[pc + 1] !== generation) {
        seen[pc + 1] = generation;
        kernel.push(pc + 1);
      }
    }
    this.steps += count + from.kernel.length;
    const state = this.state(Int32Array.from(kernel.sort((a, b) => a - b)), this.assertions ? kind : 0);
    if (state !== undefined) from.next[c] = state;
    return state;
  }

  /** Adds the closure of `kernel` at a position between kinds `before` and `after` to `current`. */
  private closure(kernel: Int32Array, before: number, after: number): number {
    let count = 0;
    for (let k = 0; k < kernel.length; k++) {
      count = this.addThreads(this.current, count, kernel[k] as number, before, after);
    }
    return count;
  }

  /**
   * Runs the thread simulation from the threads `kernel` at position `start` of `input` (after a code
   * point of kind `before`) to the end of the input. Adds its work to `steps`.
   */
  private simulate(kernel: Int32Array, before: number, input: string, start: number): boolean {
    const { op, x, classes } = this;
    const length = input.length;
    let current = this.current;
    let next = this.spare;
    let cur = start < length ? (input.codePointAt(start) as number) : -1;
    this.nextGeneration();
    let count = this.closure(kernel, before, kindOf(cur));
    let steps = count;
    let i = start;
    while (i < length) {
      if (count === 0) {
        this.steps += steps;
        return false;
      }
      const width = cur > 0xffff ? 2 : 1;
      const after = i + width < length ? (input.codePointAt(i + width) as number) : -1;
      const kind = kindOf(cur);
      const afterKind = kindOf(after);
      this.nextGeneration();
      let nextCount = 0;
      for (let t = 0; t < count; t++) {
        const pc = current[t] as number;
        steps++;
        const o = op[pc];
        let ok: boolean;
        if (o === CHAR) {
          ok = x[pc] === cur;
        } else if (o === CLASS) {
          const c = classes[x[pc] as number] as CodePointClass;
          if (cur < 128) {
            ok = c.ascii[cur] === 1;
          } else {
            c.rest.lastIndex = i;
            ok = c.rest.test(input);
          }
        } else {
          continue; // MATCH before the end of the input
        }
        if (ok) nextCount = this.addThreads(next, nextCount, pc + 1, kind, afterKind);
      }
      steps += nextCount;
      const swap = current;
      current = next;
      next = swap;
      count = nextCount;
      cur = after;
      i += width;
    }
    this.steps += steps;
    for (let t = 0; t < count; t++) if (op[current[t] as number] === MATCH) return true;
    return false;
  }

  private nextGeneration(): void {
    if (++this.generation === 0xffffffff) {
      this.seen.fill(0);
      this.generation = 1;
    }
  }

  /**
   * Adds the threads reachable from `start` without consuming input, at a position between code points
   * of kinds `before` and `after`, to `list` from `count` on; returns the new count.
   */
  private addThreads(list: Int32Array, count: number, start: number, before: number, after: number): number {
    const { op, x, y, seen } = this;
    const stack = this.stack;
    const generation = this.generation;
    let top = 0;
    stack[top++] = start;
    while (top > 0) {
      const pc = stack[--top] as number;
      if (seen[pc] === generation) continue;
      seen[pc] = generation;
      switch (op[pc]) {
        case JUMP:
          stack[top++] = x[pc] as number;
          break;
        case SPLIT:
          stack[top++] = y[pc] as number;
          stack[top++] = x[pc] as number;
          break;
        case ASSERT:
          if (assertionHolds(x[pc] as number, before, after)) stack[top++] = pc + 1;
          break;
        default:
          list[count++] = pc;
      }
    }
    return count;
  }
}
