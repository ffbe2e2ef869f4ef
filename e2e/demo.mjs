// `scripts/demo`: the whole stack for a person to try — Postern with its UI behind nginx (TLS with a
// throw-away CA), JupyterHub signing in through it, a demo user and client seeded. Ctrl-C stops it.

import path from "node:path";

import { PASSWORD, isRunning, root } from "./harness.mjs";
import { startStack, stopStack } from "./stack.mjs";

const port = Number(process.env.POSTERN_DEMO_PORT ?? 8443);
// While the stack starts, Ctrl-C exits at once, and the harness kills whatever had been started.
const exitNow = () => process.exit(130);
process.on("SIGINT", exitNow);
process.on("SIGTERM", exitNow);
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

  Logs are in ${stack.work} (jupyterhub.log, nginx-*.log, postern-api/postern.log,
  postern-single/postern.log). Ctrl-C stops everything.
`);

const watched = [
  ...stack.processes,
  ...Object.entries(stack.postern).map(([name, p]) => ({ name: `postern ${name}`, child: p.child, logPath: p.logPath })),
];
let stopping = false;
/** Stops everything and waits for it before exiting; a second Ctrl-C exits at once, killing what is left. */
async function stop(code) {
  if (stopping) process.exit(130);
  stopping = true;
  clearInterval(watch);
  console.error("Stopping the demo…");
  await stopStack(stack);
  process.exit(code);
}
process.off("SIGINT", exitNow);
process.off("SIGTERM", exitNow);
process.on("SIGINT", () => stop(0));
process.on("SIGTERM", () => stop(0));
const watch = setInterval(() => {
  const gone = watched.find((p) => !isRunning(p.child));
  if (gone) {
    console.error(`${gone.name} exited; stopping the demo. Its log: ${gone.logPath}`);
    stop(1);
  }
}, 1000);
