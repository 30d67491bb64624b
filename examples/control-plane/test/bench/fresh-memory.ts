// What the first full push's copies cost on this machine, without the control plane. grpc-js frames
// each response by copying it into a new buffer (`Buffer.allocUnsafe(length + 5)`), one per client,
// so a push of a 3 MB Address set to 100 clients writes 300 MB into memory the process may never have
// touched. Each case runs in a new process (`--expose-gc`), in rotation, round after round:
//
// - fresh: the 100 framed copies in a process that has not allocated that much before (a first push);
// - recycled: the same copies after 100 earlier ones were dropped and collected (a later push);
// - touched: the copies into 100 buffers written beforehand (the copy alone);
// - retained: 100 framed copies dropped, then an idle wait: RSS and ArrayBuffers after it, since a
//   Node process that allocates nothing runs no garbage collection and keeps dead buffers resident.
//
//   node --import tsx test/bench/fresh-memory.ts [--bytes 3000000] [--copies 100] [--rounds 3]
//        [--idle-seconds 5]
//
// Not a test: nothing is asserted. Results: docs/benchmarks.md.
import { fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    bytes: { type: "string", default: "3000000" },
    copies: { type: "string", default: "100" },
    rounds: { type: "string", default: "3" },
    "idle-seconds": { type: "string", default: "5" },
  },
});
const bytes = Number(values.bytes);
const copies = Number(values.copies);
const PAGE = 4096;

/** As grpc-js frames a message: a new buffer of the length plus 5, the header, then the copy. */
function frame(message: Buffer): Buffer {
  const out = Buffer.allocUnsafe(message.length + 5);
  out.writeUInt8(0, 0);
  out.writeUInt32BE(message.length, 1);
  message.copy(out, 5);
  return out;
}

/** CPU milliseconds (user + system) of `fn`. */
function cpuMs(fn: () => void): number {
  const before = process.cpuUsage();
  fn();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000;
}

function rssMiB(): number {
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1]) / 1024;
}

type Case = "fresh" | "recycled" | "touched" | "retained";

/** Half a second for V8's background sweeper to free the collected buffers' memory. */
const settle = () => new Promise((r) => setTimeout(r, 500));

/** One case, in this (new) process. */
async function runCase(name: Case): Promise<Record<string, number>> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("the case processes run with --expose-gc");
  const response = Buffer.alloc(bytes, 0x5a);
  let kept: Buffer[] = [];
  const framed = () => {
    for (let i = 0; i < copies; i++) kept.push(frame(response));
  };
  switch (name) {
    case "fresh":
      return { cpuMs: cpuMs(framed) };
    case "recycled": {
      framed();
      kept = [];
      gc();
      await settle();
      return { cpuMs: cpuMs(framed) };
    }
    case "touched": {
      const targets = Array.from({ length: copies }, () => Buffer.alloc(bytes + 5, 1));
      return {
        cpuMs: cpuMs(() => {
          for (const t of targets) response.copy(t, 5);
        }),
      };
    }
    case "retained": {
      framed();
      const withCopies = rssMiB();
      kept = [];
      await new Promise((r) => setTimeout(r, Number(values["idle-seconds"]) * 1000));
      const afterIdle = rssMiB();
      const arrayBuffersAfterIdle = process.memoryUsage().arrayBuffers / 2 ** 20;
      gc();
      await settle();
      return {
        rssWithCopiesMiB: Math.round(withCopies),
        rssAfterIdleMiB: Math.round(afterIdle),
        arrayBuffersAfterIdleMiB: Math.round(arrayBuffersAfterIdle),
        rssAfterCollectionMiB: Math.round(rssMiB()),
      };
    }
  }
}

function inChild(name: Case): Promise<Record<string, number>> {
  const args = [name, "--bytes", String(bytes), "--copies", String(copies)];
  args.push("--idle-seconds", String(values["idle-seconds"]));
  const child = fork(new URL(import.meta.url).pathname, args, {
    execArgv: ["--import", "tsx", "--expose-gc"],
  });
  return new Promise((resolve, reject) => {
    child.once("message", (m) => resolve(m as Record<string, number>));
    child.once("exit", (code) => reject(new Error(`${name} exited with ${code}`)));
  });
}

const mode = positionals[0] as Case | undefined;
if (mode !== undefined) {
  (process.send as (m: unknown) => void)(await runCase(mode));
  process.disconnect();
} else {
  const cases: Case[] = ["fresh", "recycled", "touched"];
  const cpu: Record<string, number[]> = { fresh: [], recycled: [], touched: [] };
  for (let round = 0; round < Number(values.rounds); round++) {
    for (let i = 0; i < cases.length; i++) {
      const name = cases[(i + round) % cases.length] as Case;
      (cpu[name] as number[]).push(Math.round((await inChild(name)).cpuMs as number));
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
  const m = Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, median(v)]));
  const pages = (copies * (bytes + 5)) / PAGE;
  console.log(
    JSON.stringify(
      {
        node: process.version,
        bytes,
        copies,
        cpuMs: cpu,
        medianCpuMs: m,
        freshOverTouched: Math.round(((m.fresh as number) / (m.touched as number)) * 10) / 10,
        recycledOverTouched: Math.round(((m.recycled as number) / (m.touched as number)) * 10) / 10,
        usPerFreshPage:
          Math.round((((m.fresh as number) - (m.touched as number)) * 1000 * 100) / pages) / 100,
        retained: { idleSeconds: Number(values["idle-seconds"]), ...(await inChild("retained")) },
      },
      null,
      2,
    ),
  );
}
