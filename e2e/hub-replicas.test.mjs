// JupyterHub end to end against three Postern replicas on PostgreSQL behind nginx's round-robin: the
// same suite as hub.test.mjs, each request of a sign-in on whichever replica nginx picks.
import { hubSuite } from "./hub-suite.mjs";

hubSuite({ replicas: 3 });
