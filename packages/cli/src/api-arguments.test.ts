// Misused library calls fail with a CliError and a stable code, never a bare TypeError.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import {
  analyzeManifests,
  authzCheck,
  authzCheckLive,
  CliError,
  loadManifests,
  type ManifestSet,
} from "./index.js";
import { MESH_DIR } from "./test-helpers.js";

const usage = (where: RegExp) => (err: unknown) =>
  err instanceof CliError && err.code === "ERR_CLI_USAGE" && where.test(err.message);

describe("library calls check their arguments", () => {
  let mesh: ManifestSet;
  before(async () => {
    mesh = await loadManifests(MESH_DIR);
  });

  it("authzCheck without from/to, or with options of the wrong type, throws ERR_CLI_USAGE", () => {
    const call = authzCheck as (set: unknown, options: unknown) => unknown;
    for (const options of [undefined, null, "sleep-0", {}, { from: "sleep-0" }, { to: "web:80" }]) {
      assert.throws(() => call(mesh, options), usage(/authzCheck: .*from.*to/));
    }
    for (const options of [
      { from: 5, to: "web:80" },
      { from: "sleep-0", to: "web:80", method: 1 },
      { from: "sleep-0", to: "web:80", trustDomain: null },
      { from: "sleep-0", to: "web:80", clusterDomain: ["x"] },
    ]) {
      assert.throws(() => call(mesh, options), usage(/authzCheck: options\.\w+ must be a string/));
    }
    assert.throws(() => call({}, { from: "sleep-0", to: "web:80" }), usage(/authzCheck: .*loadManifests/));
    assert.equal(authzCheck(mesh, { from: "sleep-0", to: "web:80" }).allowed, true);
  });

  it("authzCheckLive without from/to, or without dumps, throws ERR_CLI_USAGE", () => {
    const call = authzCheckLive as (dumps: unknown, options: unknown) => unknown;
    for (const options of [undefined, {}, { from: "sleep-0" }, { from: "a", to: "b:1", rootNamespace: 7 }]) {
      assert.throws(() => call([], options), usage(/authzCheckLive: /));
    }
    assert.throws(() => call(undefined, { from: "a", to: "b:1" }), usage(/authzCheckLive: /));
  });

  it("analyzeManifests of something that is not a manifest set throws ERR_CLI_USAGE", () => {
    const call = analyzeManifests as (set: unknown, options?: unknown) => unknown;
    for (const set of [undefined, null, {}, { objects: [] }]) {
      assert.throws(() => call(set), usage(/analyzeManifests: .*loadManifests/));
    }
    assert.throws(() => call(mesh, { rootNamespace: 3 }), usage(/analyzeManifests: options\.rootNamespace/));
  });
});
