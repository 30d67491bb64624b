import { defineConfig } from "tsup";
import { appBuild } from "../tsup-app.js";

export default defineConfig(appBuild);
