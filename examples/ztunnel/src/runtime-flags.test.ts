import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { missingProxyNodeFlags, PROXY_NODE_FLAGS, warnMissingProxyNodeFlags } from "./runtime-flags.js";

const startScript = (app: string) =>
  (
    JSON.parse(readFileSync(new URL(`../../${app}/package.json`, import.meta.url), "utf8")) as {
      scripts: Record<string, string>;
    }
  ).scripts.start;

describe("PROXY_NODE_FLAGS", () => {
  it("are the flags of the ztunnel's and the waypoint's pnpm start", () => {
    for (const app of ["ztunnel", "waypoint"]) {
      assert.equal(startScript(app), ["node", ...PROXY_NODE_FLAGS, "dist/main.js"].join(" "), app);
    }
  });
});

describe("missingProxyNodeFlags", () => {
  it("names every flag when none is given", () => {
    assert.deepEqual(missingProxyNodeFlags([]), [...PROXY_NODE_FLAGS]);
    assert.deepEqual(missingProxyNodeFlags(["--import", "tsx", "--max-old-space-size=512"]), [
      ...PROXY_NODE_FLAGS,
    ]);
  });

  it("takes a flag as set whatever its value and spelling", () => {
    assert.deepEqual(missingProxyNodeFlags(["--initial-old-space-size=128", "--min_semi_space_size=16"]), []);
    assert.deepEqual(missingProxyNodeFlags(["--initial_old_space_size", "96"]), ["--min-semi-space-size=8"]);
  });

  it("reads this process's own flags by default", () => {
    assert.deepEqual(missingProxyNodeFlags(), missingProxyNodeFlags(process.execArgv));
  });
});

describe("warnMissingProxyNodeFlags", () => {
  it("logs one warning with the missing flags and the cost, or nothing", () => {
    const warnings: [object, string][] = [];
    warnMissingProxyNodeFlags({ warn: (obj, msg) => warnings.push([obj, msg]) }, "more CPU");
    const missing = missingProxyNodeFlags();
    if (missing.length === 0) {
      assert.deepEqual(warnings, []);
    } else {
      assert.deepEqual(warnings[0]?.[0], { missing });
      assert.match(warnings[0]?.[1] ?? "", /more CPU/);
      assert.equal(warnings.length, 1);
    }
  });
});
