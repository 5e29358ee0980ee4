/**
 * The dashboard page served at `/` (docs/dashboard.md): one HTML document with its CSS and script
 * inline, so it needs no CDN and no file next to the compiled binary. The script is TypeScript,
 * page_script.ts, bundled by tools/build_dashboard.ts into page_script.generated.ts (committed, so
 * nothing is built at run time; tests/dashboard_build_test.ts fails when it is out of date).
 */
import { PAGE_SCRIPT } from "./page_script.generated.ts";

export const DASHBOARD_PAGE = String.raw`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mutexd dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
header { background: #1d2330; color: #fff; padding: 8px 16px; display: flex; gap: 16px; align-items: baseline; }
header h1 { font-size: 18px; margin: 0; }
#conn.down { color: #ff8a80; }
main { display: grid; grid-template-columns: 420px 1fr; gap: 12px; padding: 12px; }
section { background: #fff; border-radius: 6px; padding: 10px 12px; box-shadow: 0 1px 2px #0002; }
h2 { font-size: 15px; margin: 0 0 8px; }
table { border-collapse: collapse; width: 100%; }
td, th { text-align: left; padding: 2px 6px; border-bottom: 1px solid #eee; font-variant-numeric: tabular-nums; }
.alive { fill: #2e7d32; } .suspected { fill: #f9a825; } .outOfView { fill: #9e9e9e; } .minority { fill: #6a1b9a; } .down { fill: #c62828; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; color: #fff; font-size: 12px; }
.badge.alive { background: #2e7d32; } .badge.down { background: #c62828; } .badge.suspected { background: #f9a825; } .badge.outOfView { background: #9e9e9e; } .badge.minority { background: #6a1b9a; }
#token { fill: #ffb300; stroke: #000; transition: transform 0.3s ease; }
#timeline { max-height: 320px; overflow: auto; font-family: ui-monospace, monospace; font-size: 12px; }
#login { display: none; }
</style></head>
<body>
<header><h1>mutexd</h1><span id="conn">connecting…</span><span id="view"></span></header>
<form id="login"><section>This cluster needs a client token with <code>read</code> permission:
<input id="tokenInput" type="password" autocomplete="off"> <button>Use token</button></section></form>
<main>
<section><h2>Token ring</h2><svg id="ring" width="400" height="320" viewBox="-200 -160 400 320" role="img" aria-label="token ring">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0L10,5L0,10z"/></marker></defs>
<g id="ringNodes"></g><circle id="token" r="8" cx="0" cy="0" data-holder="" visibility="hidden"/></svg>
<div id="ringLegend"></div></section>
<section><h2>Lock service</h2><table id="lockService"></table></section>
<section><h2>Locks</h2><div id="lockCounts"></div><h3>Hottest by wait</h3><table id="hottest"></table>
<h3>Longest held</h3><table id="longestHeld"></table>
<h3>Browse by name</h3><form id="browse"><input id="prefix" placeholder="name prefix" size="24"> <button>Show</button>
<button type="button" id="nextPage" disabled>Next page</button></form><div id="pageInfo"></div><table id="lockPage"></table></section>
<section><h2>Timeline</h2><div id="timeline"></div></section>
</main>
<script>${PAGE_SCRIPT}</script>
</body></html>
`;
