// Bad arguments are refused with ERR_NETNS_INVALID_ARGUMENT before anything is touched or opened,
// and the calls that do open descriptors leave none behind when they fail.
import assert from "node:assert/strict";
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import {
  assertNoNewFds,
  createTestNetns,
  needsLinux,
  needsRoot,
  newFds,
  openFds,
} from "../test/netns-fixture.js";
import { NetnsError } from "./errors.js";
import { adoptNetns, closeFd, type NetnsHandle, openNetns, withNetns } from "./netns.js";
import { connectFromNetns, createListeningSocket, listenInNetns, socketFd } from "./tcp.js";
import { createZdsClient, type ZdsClientHandler } from "./zds/client.js";
import { createZdsServer } from "./zds/server.js";

const invalid = (err: unknown) => err instanceof NetnsError && err.code === "ERR_NETNS_INVALID_ARGUMENT";

const dir = needsLinux ? "" : mkdtempSync(join(tmpdir(), "ambient-netns-opts-"));
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Runs a constructor that must throw; closes whatever it made if it did not, so the test ends. */
function refused(make: () => { close(): void }): void {
  let made: { close(): void } | undefined;
  try {
    made = make();
  } catch (err) {
    assert.ok(invalid(err), `expected ERR_NETNS_INVALID_ARGUMENT, got ${String(err)}`);
    return;
  }
  made.close();
  assert.fail("accepted");
}

async function withPod(fn: (handle: NetnsHandle) => Promise<void>): Promise<void> {
  const pod = createTestNetns();
  const handle = openNetns(pod.path);
  try {
    await fn(handle);
  } finally {
    handle.close();
    pod.remove();
  }
}

describe("descriptor arguments", { skip: needsLinux }, () => {
  it("closeFd refuses NaN, fractions and negatives and closes nothing", () => {
    const fd = openSync("/dev/null", "r");
    try {
      for (const bad of [Number.NaN, fd + 0.7, -1, Number.POSITIVE_INFINITY, "3" as unknown as number]) {
        assert.throws(() => closeFd(bad), invalid, String(bad));
      }
      fstatSync(fd); // still open
    } finally {
      closeSync(fd);
    }
  });

  it("socketFd refuses a number that is not a descriptor", () => {
    for (const bad of [Number.NaN, -1, 1.5]) assert.throws(() => socketFd(bad), invalid, String(bad));
    assert.equal(socketFd(7), 7);
  });

  it("openNetns refuses a path that is not a non-empty string before opening anything", () => {
    const open = openNetns as (path?: unknown) => NetnsHandle;
    const before = openFds();
    for (const bad of [undefined, null, "", 5, {}, "/proc/self/ns/net\0x"]) {
      assert.throws(() => open(bad), invalid, String(bad));
    }
    assert.deepEqual(newFds(before), []);
    assert.throws(
      () => open(),
      (err: unknown) => invalid(err) && /^openNetns needs a path/.test((err as Error).message),
    );
  });

  it("adoptNetns refuses a path label that is not a string", () => {
    assert.throws(() => adoptNetns(7, 5 as unknown as string), invalid);
  });

  it("withNetns refuses something that is not a handle", () => {
    assert.throws(() => withNetns(5 as unknown as NetnsHandle, () => 1), invalid);
    assert.throws(() => withNetns(null as unknown as NetnsHandle, () => 1), invalid);
  });
});

describe("listeners and connections in a namespace", { skip: needsRoot }, () => {
  it("createListeningSocket refuses a backlog that is not an int, leaving nothing open", async () => {
    await withPod(async (handle) => {
      const before = openFds();
      for (const backlog of [Number.NaN, -1, 2 ** 40, 1.5]) {
        assert.throws(
          () => createListeningSocket(handle, { host: "127.0.0.1", port: 0, backlog }),
          invalid,
          String(backlog),
        );
      }
      await assertNoNewFds(before);
    });
  });

  it("listenInNetns with a server that already listens rejects and leaves no socket bound", async () => {
    await withPod(async (handle) => {
      const server = net.createServer();
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      try {
        const before = openFds();
        await assert.rejects(listenInNetns(handle, { host: "127.0.0.1", port: 15001, server }), invalid);
        await assertNoNewFds(before);
        // The port in the namespace is free again.
        const again = await listenInNetns(handle, { host: "127.0.0.1", port: 15001 });
        await new Promise((resolve) => again.close(resolve));
      } finally {
        await new Promise((resolve) => server.close(resolve));
      }
    });
  });

  it("connectFromNetns refuses a bad timeout before opening a socket", async () => {
    await withPod(async (handle) => {
      const before = openFds();
      for (const timeout of [-5, Number.NaN, 2 ** 31, Number.POSITIVE_INFINITY]) {
        assert.throws(() => connectFromNetns(handle, { host: "127.0.0.1", port: 1, timeout }), invalid);
      }
      await assertNoNewFds(before);
    });
  });
});

describe("ZDS options", { skip: needsLinux }, () => {
  const handler: ZdsClientHandler = { addWorkload() {}, deleteWorkload() {} };

  it("createZdsClient refuses reconnect delays that would spin or overflow", () => {
    const path = join(dir, "none.sock");
    for (const reconnectInitialDelayMs of [Number.NaN, 0, -100, 2 ** 31]) {
      refused(() => createZdsClient({ path, handler, reconnectInitialDelayMs }));
    }
    for (const reconnectMaxDelayMs of [Number.NaN, -1, 2 ** 31, 5]) {
      refused(() => createZdsClient({ path, handler, reconnectInitialDelayMs: 10, reconnectMaxDelayMs }));
    }
  });

  it("createZdsClient refuses a handler, path or logger of the wrong shape", () => {
    const path = join(dir, "none.sock");
    refused(() => createZdsClient({ path, handler: {} as ZdsClientHandler }));
    refused(() => createZdsClient({ path, handler: undefined as unknown as ZdsClientHandler }));
    refused(() => createZdsClient({ path: 5 as unknown as string, handler }));
    refused(() => createZdsClient({ path: "", handler }));
    refused(() => createZdsClient({ path, handler, logger: {} as never }));
  });

  it("createZdsServer refuses a bad ackTimeoutMs or path", () => {
    for (const ackTimeoutMs of [Number.NaN, 0, -1, 2 ** 31]) {
      refused(() => createZdsServer({ path: join(dir, "s.sock"), ackTimeoutMs }));
    }
    refused(() => createZdsServer({ path: 5 as unknown as string }));
  });
});
