// The one module that loads @peculiar/x509. Its 2.x release needs a Reflect metadata polyfill
// loaded before it, so the polyfill import must stay first.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";

export { x509 };
