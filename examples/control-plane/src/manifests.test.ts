import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseManifestFile, parseManifests } from "./manifests.js";

describe("parseManifests", () => {
  it("reads multi-document files in path order and unpacks lists", () => {
    const { objects, issues } = parseManifests([
      { path: "b.yaml", text: "kind: Pod\nmetadata: { name: p, namespace: n, labels: { a: 1 } }\n" },
      {
        path: "a.yaml",
        text: "kind: Namespace\nmetadata: { name: n }\n---\nkind: List\nitems:\n- { kind: ServiceAccount, metadata: { name: s } }\n",
      },
    ]);
    assert.deepEqual(issues, []);
    assert.deepEqual(
      objects.map((o) => [o.kind, o.metadata.name, o.source]),
      [
        ["Namespace", "n", "a.yaml#0"],
        ["ServiceAccount", "s", "a.yaml#1"],
        ["Pod", "p", "b.yaml#0"],
      ],
    );
    assert.deepEqual(objects[2]?.metadata.labels, { a: "1" });
  });

  const bad: [string, string, RegExp][] = [
    ["malformed YAML", "kind: [", /malformed YAML/],
    ["not an object", "- 1\n- 2\n", /must be an object/],
    ["no kind", "metadata: { name: x }\n", /kind is missing/],
    ["no name", "kind: Pod\nmetadata: {}\n", /metadata.name is missing/],
    [
      "a kind the security.istio.io group does not have",
      "apiVersion: security.istio.io/v1\nkind: AuthorisationPolicy\nmetadata: { name: deny-all }\nspec: {}\n",
      /security\.istio\.io has no kind "AuthorisationPolicy"/,
    ],
    [
      "a policy kind of another group (a misspelt security.istio.io)",
      "apiVersion: secuirty.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: deny-all }\nspec: {}\n",
      /AuthorizationPolicy is read from security\.istio\.io, not secuirty\.istio\.io/,
    ],
  ];
  for (const [name, text, message] of bad) {
    it(`reports ${name} and keeps the other documents`, () => {
      const { objects, issues } = parseManifests([
        { path: "x.yaml", text: `${text}\n---\nkind: Namespace\nmetadata: { name: ok }\n` },
      ]);
      assert.equal(issues.length, 1);
      assert.equal(issues[0]?.source, "x.yaml#0");
      assert.match(issues[0]?.message ?? "", message);
      assert.deepEqual(
        objects.map((o) => o.metadata.name),
        ["ok"],
      );
    });
  }

  it("names the line and column of a YAML error, and marks an empty file", () => {
    const tab = parseManifestFile({ path: "t.yaml", text: "kind: Pod\nmetadata:\n\tname: x\n" });
    assert.match(tab.problems[0]?.message ?? "", /^malformed YAML \(line 3, column 1\): Tabs/);
    assert.deepEqual(
      ["", " \n\t\n", "# only a comment\n"].map((text) => parseManifestFile({ path: "e.yaml", text }).empty),
      [true, true, false],
    );
  });

  it("ignores empty documents", () => {
    const { objects, issues } = parseManifests([{ path: "e.yaml", text: "---\n# nothing\n---\n" }]);
    assert.deepEqual([objects, issues], [[], []]);
  });
});
