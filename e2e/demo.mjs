// `scripts/demo`: the whole stack for a person to try — Postern with its UI behind nginx (TLS with a
// throw-away CA), JupyterHub signing in through it, a demo user and client seeded. Ctrl-C stops it.

import path from "node:path";

import { PASSWORD, root } from "./harness.mjs";
import { startStack, stopStack } from "./stack.mjs";

const port = Number(process.env.POSTERN_DEMO_PORT ?? 8443);
const stack = await startStack({
  work: path.join(root, ".demo"),
  domain: "localhost",
  port,
  users: [["demo", ["e2e-users", "hub-admins"]]],
});
console.log(`
  The demo is up. Open JupyterHub and sign in through Postern:

      ${stack.url("hub", "/hub/")}

  Username: demo      Password: ${PASSWORD}

  Postern's login UI is ${stack.url("ui", "/")} (try a sign-in there to see what the Hub receives),
  its API ${stack.url("api", "/.well-known/openid-configuration")}, and the one-origin variant
  ${stack.url("postern", "/")}. *.localhost names reach this machine in Chromium and Firefox.
  The certificates come from a throw-away CA: trust ${stack.ca} in your browser, or accept the warning.

  Logs are in ${stack.work}. Ctrl-C stops everything.
`);
const stop = () => {
  stopStack(stack);
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
setInterval(() => {
  for (const p of stack.processes) {
    if (p.child.exitCode !== null) {
      console.error(`${p.name} exited; stopping the demo. Its log: ${p.logPath}`);
      stop();
    }
  }
}, 1000);
