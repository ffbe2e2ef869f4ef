// Loads the WebAssembly app. A file rather than an inline script, so the CSP can forbid inline code.
import init from "/frontend.js";
init({ module_or_path: "/frontend_bg.wasm" });
