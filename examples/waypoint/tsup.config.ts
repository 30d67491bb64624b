import { defineConfig } from "tsup";
import { appBuild } from "../tsup-app.js";

// @ambient/example-ztunnel is an app, not a package: its `exports` point at its TypeScript sources,
// so its modules are bundled in. Their own imports must then resolve from this folder: the waypoint's
// package.json lists them too.
export default defineConfig({ ...appBuild, noExternal: ["@ambient/example-ztunnel"] });
