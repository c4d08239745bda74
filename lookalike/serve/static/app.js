// lookalike's page: plain JavaScript, no build step, no network beyond this server.
// Every view lives in the URL (/?id=N, /?view=dupes&threshold=0.9, /?view=info), so it can be shared.
"use strict";

const $ = (id) => document.getElementById(id);
// `navigation` aborts the requests of the view it replaces: an answer that arrives after the
// user moved on (a click, then Back) is never shown under another view's URL.
const state = { upload: null, previewUrl: null, navigation: new AbortController(), token: null };

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(path, options = {}) {
  const signal = options.signal;
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    if (signal && signal.aborted) throw error;
    throw new Error("the server did not answer (is `lookalike serve` still running?)");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    if (signal && signal.aborted) throw error;
    body = null;
  }
  if (!response.ok) throw new Error(body && body.error ? body.error : `${response.status} ${response.statusText}`);
  return body;
}

// A request that changes something carries this server start's token (GET /api/session);
// the browser adds the Origin header. The server refuses it without both.
async function act(method, path, body) {
  if (!state.token) state.token = (await api("/api/session")).token;
  const headers = { "X-Lookalike-Token": state.token };
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(body);
  }
  return api(path, { method, headers, body });
}

// A new view: the requests of the one before are aborted, and the signal for this one's is returned.
function navigation() {
  state.navigation.abort();
  state.navigation = new AbortController();
  return state.navigation.signal;
}

// ---- the URL is the state ----

function params() {
  return new URLSearchParams(location.search);
}

function go(query, replace = false) {
  const search = new URLSearchParams(query).toString();
  history[replace ? "replaceState" : "pushState"](null, "", "/" + (search ? "?" + search : ""));
  route();
}

function searchQuery(extra) {
  const query = { ...extra, k: $("k").value };
  if ($("threshold").value !== "") query.threshold = $("threshold").value;
  return query;
}

function route() {
  navigation();
  const p = params();
  const view = ["dupes", "info"].includes(p.get("view")) ? p.get("view") : "search";
  for (const name of ["search", "dupes", "info"]) $(`${name}-view`).hidden = name !== view;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clearMessages();
  clearResults();
  if (view === "dupes") return showDupes(p);
  if (view === "info") return showInfo();
  if (p.has("k")) $("k").value = p.get("k");
  if (p.has("threshold")) $("threshold").value = p.get("threshold");
  if (p.has("id")) return showSimilar(p.get("id"));
  if (state.upload && p.get("view") === "search") return searchUpload(state.upload, false);
  state.upload = null;
  $("query").hidden = true;
  setStatus("Drop, paste or choose an image to find the stored images most like it.");
}

// ---- messages ----

function setStatus(text) {
  $("status").textContent = text;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
  setStatus("");
}

function clearMessages() {
  $("error").hidden = true;
  $("error").textContent = "";
  setStatus("");
}

function clearResults() {
  $("results").replaceChildren();
  $("groups").replaceChildren();
}

// ---- results ----

function thumb(id, alt) {
  return el("img", { src: `/api/thumbs/${id}?size=256`, alt, loading: "lazy", decoding: "async" });
}

function result(hit, caption) {
  const link = el("a", {
    className: "result",
    href: "/?" + new URLSearchParams(searchQuery({ id: hit.id })).toString(),
    dataset: { id: hit.id, path: hit.path, score: hit.score, rank: hit.rank ?? "" },
    title: `${hit.path}\nscore ${hit.score.toFixed(4)}: show its neighbours`,
  }, [
    thumb(hit.id, hit.path),
    el("span", { className: "caption" }, [
      el("span", { className: "score" }, [caption]),
      el("span", { className: "path" }, [hit.path]),
    ]),
  ]);
  link.addEventListener("click", (event) => {
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    go(searchQuery({ id: hit.id }));
  });
  return el("li", {}, [link]);
}

function showHits(answer, what, started) {
  const hits = answer.hits;
  $("results").replaceChildren(...hits.map((hit) => result(hit, `#${hit.rank} · ${hit.score.toFixed(3)}`)));
  showLabels(answer.predicted);
  const took = Math.round(performance.now() - started);
  setStatus(hits.length ? `The ${plural(hits.length, "nearest image")} of ${what} (${took} ms)` : `No stored image of ${what} reaches the least score.`);
}

function showLabels(predicted) {
  const list = $("labels");
  list.hidden = !predicted;
  list.replaceChildren(...(predicted || []).map((p) =>
    el("li", {}, [el("strong", {}, [p.label]), ` ${(100 * p.probability).toFixed(1)}%`])));
}

function showQuery(src, caption, links) {
  $("query").hidden = false;
  $("query-image").src = src;
  $("query-image").alt = caption;
  $("query-caption").textContent = caption;
  $("query-links").replaceChildren(...links);
}

// ---- search by a stored image, or by an upload ----

async function showSimilar(id) {
  if (!/^\d{1,19}$/.test(id)) {
    $("query").hidden = true;
    return showError(`"${id}" is not an image id: ids are the numbers in result links.`);
  }
  const signal = state.navigation.signal;
  const started = performance.now();
  setStatus("Searching…");
  const query = new URLSearchParams({ k: $("k").value });
  if ($("threshold").value !== "") query.set("threshold", $("threshold").value);
  try {
    const answer = await api(`/api/similar/${id}?${query}`, { signal });
    showQuery(`/api/thumbs/${id}?size=384`, answer.query.path, [
      el("a", { href: `/api/images/${id}`, target: "_blank", rel: "noopener" }, ["open the original"]),
    ]);
    showHits(answer, answer.query.path, started);
  } catch (error) {
    if (signal.aborted) return;
    $("query").hidden = true;
    showError(`Could not show image ${id}: ${error.message}`);
  }
}

async function searchUpload(file, push = true) {
  state.upload = file;
  if (push) return go(searchQuery({ view: "search" }), params().get("view") === "search" && !params().has("id"));
  const name = file.name || "the pasted image";
  const signal = state.navigation.signal;
  const started = performance.now();
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(file);
  showQuery(state.previewUrl, `${name} (uploaded)`, []);
  setStatus(`Searching with ${name}…`);
  const form = new FormData();
  form.append("image", file, name);
  form.append("k", $("k").value);
  if ($("threshold").value !== "") form.append("threshold", $("threshold").value);
  try {
    const answer = await api("/api/search", { method: "POST", body: form, signal });
    showHits(answer, name, started);
  } catch (error) {
    if (signal.aborted) return;
    clearResults();
    $("query").hidden = true;
    showError(`Could not search with ${name}: ${error.message}`);
  }
}

function takeFile(files) {
  const file = [...(files || [])][0];
  if (file) searchUpload(file);
}

// ---- near-duplicates, and resolving them ----
// The page only says what the user decided (a keeper, the members to remove); the server checks each
// decision against its own groups and moves only the duplicates of the keeper itself (serve/review.py).

const review = { answer: null, keepers: new Map() };

async function showDupes(p) {
  if (p.has("threshold")) $("dupes-threshold").value = p.get("threshold");
  if (p.has("limit")) $("dupes-limit").value = p.get("limit");
  const query = new URLSearchParams({ threshold: $("dupes-threshold").value, limit: $("dupes-limit").value });
  const signal = state.navigation.signal;
  setStatus("Comparing every stored image with its neighbours…");
  try {
    review.answer = await api(`/api/dupes?${query}`, { signal });
    review.keepers = new Map(review.answer.groups.map((group, number) => [number, group.members[0].id]));
    renderGroups();
    showSummary();  // a watching server may hold more images than when the page loaded
    const answer = review.answer;
    const shown = answer.total > answer.groups.length ? ` (the first ${answer.groups.length} shown)` : "";
    setStatus(answer.total ? `${plural(answer.total, "group")} of duplicates at similarity ${answer.threshold} or more${shown}`
      : `No duplicates at similarity ${answer.threshold} or more.`);
  } catch (error) {
    if (!signal.aborted) showError(`Could not find duplicates: ${error.message}`);
  }
}

function renderGroups() {
  const answer = review.answer;
  const resolvable = Boolean(answer.resolve_to);
  const groups = answer.groups.map((group, number) => {
    const keeper = review.keepers.get(number);
    const title = el("h2", {}, [`Group ${number + 1} · ${group.kind} · ${plural(group.size, "image")}`]);
    const items = group.members.map((member) => reviewed(group, number, member, keeper));
    const resolve = el("button", { type: "button", className: "resolve", disabled: !resolvable,
      title: resolvable ? `Move the duplicates of the keeper to ${answer.resolve_to}` : "Start the server with --quarantine DIR or --trash" },
      [`Resolve group ${number + 1}`]);
    resolve.addEventListener("click", () => resolveGroups([number]));
    return el("section", { className: "group", "aria-label": `Group ${number + 1}` },
      [title, el("ol", { className: "grid" }, items), el("p", { className: "group-actions" }, [resolve])]);
  });
  const bar = [];
  if (answer.groups.length) {
    const all = el("button", { type: "button", id: "resolve-all", disabled: !resolvable }, ["Resolve all shown groups"]);
    all.addEventListener("click", () => resolveGroups(answer.groups.map((_, number) => number)));
    bar.push(all);
  }
  const undo = el("button", { type: "button", id: "undo", className: "secondary" }, ["Undo the last action"]);
  undo.addEventListener("click", undoLast);
  bar.push(undo);
  if (answer.groups.length) {
    bar.push(el("span", { className: "where" }, [resolvable
      ? `Resolving moves each keeper's duplicates to ${answer.resolve_to}, journal first; Undo puts them back.`
      : "To resolve groups here, start the server with --quarantine DIR or --trash."]));
  }
  $("groups").replaceChildren(el("div", { className: "review-bar" }, bar), ...groups);
}

// One member: its role (the keeper, chosen by the rules or by the user; or to remove), and what the user can do.
function reviewed(group, number, member, keeper) {
  const isKeeper = member.id === keeper;
  const chosen = keeper !== group.members[0].id;
  let caption;
  if (isKeeper) caption = chosen ? "keeper · chosen by you" : `keeper · ${member.reason}`;
  else if (member.missing) caption = "missing from disk · left alone";
  else caption = chosen ? "to remove, if a duplicate of the keeper"
    : `to remove · ${member.score.toFixed(3)} to the keeper`;
  const item = result(member, caption);
  item.classList.toggle("keeper", isKeeper);
  item.dataset.role = isKeeper ? "keeper" : "remove";
  if (isKeeper || member.missing) return item;
  const keep = el("button", { type: "button", className: "secondary" }, ["Keep this one"]);
  keep.addEventListener("click", () => { review.keepers.set(number, member.id); renderGroups(); });
  const buttons = [keep];
  if (group.kind !== "exact") {  // the same bytes can't be "not duplicates"
    const distinct = el("button", { type: "button", className: "secondary" }, ["Not a duplicate"]);
    distinct.addEventListener("click", () => notDuplicates(keeper, member));
    buttons.push(distinct);
  }
  item.append(el("div", { className: "member-actions" }, buttons));
  return item;
}

async function resolveGroups(numbers) {
  const answer = review.answer;
  const groups = numbers.map((number) => {
    const keeper = review.keepers.get(number);
    const remove = answer.groups[number].members.filter((m) => m.id !== keeper && !m.missing).map((m) => m.id);
    return { keeper, remove };
  });
  clearMessages();
  setStatus("Moving the duplicates…");
  try {
    const done = await act("POST", "/api/dupes/resolve",
      { threshold: answer.threshold, k: answer.k, generation: answer.generation, groups });
    await reloadDupes();
    const left = done.left.map((l) => `${l.path}: ${l.why}`);
    setStatus(`Moved ${plural(done.moved.length, "file")} to ${done.to}.` + (left.length ? ` Left alone: ${left.join("; ")}.` : "")
      + (done.moved.length ? " Undo puts back what moved." : ""));
  } catch (error) {
    showError(`Could not resolve: ${error.message}`);
  }
}

async function notDuplicates(keeper, member) {
  clearMessages();
  try {
    await act("POST", "/api/distinct", { ids: [keeper, member.id] });
    await reloadDupes();
    setStatus(`${member.path} is marked as not a duplicate of the keeper; it won't be grouped with it again.`);
  } catch (error) {
    showError(`Could not record it: ${error.message}`);
  }
}

async function undoLast() {
  clearMessages();
  setStatus("Putting the files back…");
  try {
    const done = await act("POST", "/api/undo");
    await reloadDupes();
    const kept = done.kept.map((k) => `${k.path}: ${k.why}`);
    setStatus(`Put back ${plural(done.restored.length, "file")}.` + (kept.length ? ` Not put back: ${kept.join("; ")}.` : ""));
  } catch (error) {
    showError(`Could not undo: ${error.message}`);
  }
}

async function reloadDupes() {
  const answer = review.answer;
  const query = new URLSearchParams({ threshold: answer.threshold, limit: $("dupes-limit").value });
  review.answer = await api(`/api/dupes?${query}`);
  review.keepers = new Map(review.answer.groups.map((group, number) => [number, group.members[0].id]));
  renderGroups();
  showSummary();  // the count of images changed
}

// ---- the store ----

function megabytes(bytes) {
  return bytes < 1e6 ? `${Math.ceil(bytes / 1e3)} kB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

async function showInfo() {
  const signal = state.navigation.signal;
  try {
    const [info, failed] = await Promise.all([api("/api/info", { signal }), api("/api/failures?limit=1000", { signal })]);
    const spec = info.spec || {};
    const rows = [
      ["store", info.store],
      ["indexed folder", info.root],
      ["model", `${spec.model} (layer ${spec.layer}, ${spec.dim}-d)`],
      ["images", `${info.embedded} embedded, ${info.failed} failed`],
      ["index", info.index_factory || "not built yet"],
      ["generation", String(info.generation)],
      ["on disk", Object.entries(info.bytes || {}).map(([name, size]) => `${name} ${megabytes(size)}`).join(", ")],
      ["classifier", info.classifier ? `${info.classifier.file}: ${info.classifier.classifier} over ${info.classifier.classes.join(", ")}` : "none (start with --classifier MODEL)"],
      ["uploads", `up to ${megabytes(info.limits.max_upload_bytes)} and ${(info.limits.max_pixels / 1e6).toFixed(0)} megapixels`],
    ];
    $("info").replaceChildren(...rows.flatMap(([term, value]) => [el("dt", {}, [term]), el("dd", {}, [value])]));
    const body = $("failures").tBodies[0];
    body.replaceChildren(...failed.failures.map((f) => el("tr", {}, [el("td", {}, [f.path]), el("td", {}, [f.reason])])));
    $("failures").hidden = failed.total === 0;
    $("failures-none").hidden = failed.total !== 0;
    if (failed.total > failed.failures.length) setStatus(`The first ${failed.failures.length} of ${failed.total} failures are shown.`);
  } catch (error) {
    if (!signal.aborted) showError(`Could not read the store's info: ${error.message}`);
  }
}

async function showSummary() {
  try {
    const info = await api("/api/info");
    $("summary").textContent = `${info.embedded} images · ${info.spec.model}`;
  } catch (error) {
    $("summary").textContent = "";
  }
}

// ---- wiring ----

function rerun() {
  const p = params();
  if (p.has("id")) go(searchQuery({ id: p.get("id") }), true);
  else if (state.upload) {
    navigation();
    searchUpload(state.upload, false);
  }
}

function wire() {
  $("file").addEventListener("change", (event) => {
    takeFile(event.target.files);
    event.target.value = "";  // choosing the same file again searches again
  });
  for (const id of ["k", "threshold"]) $(id).addEventListener("change", rerun);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    rerun();
  });
  $("dupes-form").addEventListener("submit", (event) => {
    event.preventDefault();
    go({ view: "dupes", threshold: $("dupes-threshold").value, limit: $("dupes-limit").value });
  });
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData ? event.clipboardData.files : [])].filter((f) => f.type.startsWith("image/"));
    if (files.length) {
      event.preventDefault();
      takeFile(files);
    }
  });
  const drop = $("drop");
  window.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("dragging");
  });
  window.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) drop.classList.remove("dragging");
  });
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    if (params().get("view") === "dupes" || params().get("view") === "info") history.pushState(null, "", "/");
    takeFile(event.dataTransfer && event.dataTransfer.files);
  });
  for (const link of document.querySelectorAll("nav a, h1 a")) {
    link.addEventListener("click", (event) => {
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      state.upload = null;
      go(Object.fromEntries(new URL(link.href).searchParams));
    });
  }
  window.addEventListener("popstate", route);
}

wire();
showSummary();
route();
