// JupyterHub end to end against one Postern on SQLite (the suite is in hub-suite.mjs).
import { hubSuite } from "./hub-suite.mjs";

hubSuite();
