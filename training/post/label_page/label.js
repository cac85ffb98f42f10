// The labeling page: state from GET /api/state, one POST per judgement or undo. Every text from the server
// (instruction, responses, guidelines, names) is set with textContent, never parsed as HTML.
"use strict";

const labeler = new URLSearchParams(location.search).get("labeler");
const byId = (id) => document.getElementById(id);
const KEYS = { "1": "left", "2": "right", "3": "tie", "s": "skip" };
let current = null;
let busy = false;

async function api(path, body) {
  const url = new URL(path, location.origin);
  if (labeler) url.searchParams.set("labeler", labeler);
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(url, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function show(state) {
  current = state;
  byId("labeler").textContent = state.labeler;
  byId("guidelines").textContent = state.guidelines;
  byId("progress").textContent = `${state.done} of ${state.total} judged`;
  byId("task").hidden = !state.item;
  byId("finished").hidden = !!state.item;
  byId("prompt").textContent = state.item ? state.item.prompt : "";
  byId("left").textContent = state.item ? state.item.left : "";
  byId("right").textContent = state.item ? state.item.right : "";
  document.body.dataset.item = state.item ? state.item.id : "";
  document.body.dataset.done = String(state.done);
  enable();
}

function enable() {
  for (const button of document.querySelectorAll("button[data-choice]")) {
    button.disabled = busy || !current || !current.item;
  }
  byId("undo").disabled = busy || !current || !current.can_undo;
}

async function act(path, body) {
  if (busy) return;                 // one request at a time: a double press cannot judge the next item unseen
  busy = true;
  enable();
  try {
    const state = await api(path, body);
    byId("message").textContent = "";
    busy = false;
    show(state);
  } catch (error) {
    byId("message").textContent = error.message;
    busy = false;
    enable();
  }
}

function judge(choice) {
  if (current && current.item) act("/api/judge", { item: current.item.id, choice });
}

function undo() {
  if (current && current.can_undo) act("/api/undo", {});
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  if (event.target.closest && event.target.closest("input, textarea, select")) return;
  const key = event.key.toLowerCase();
  if (key in KEYS) { event.preventDefault(); judge(KEYS[key]); }
  else if (key === "u") { event.preventDefault(); undo(); }
});

for (const button of document.querySelectorAll("button[data-choice]")) {
  button.addEventListener("click", () => judge(button.dataset.choice));
}
byId("undo").addEventListener("click", undo);

api("/api/state").then(show, (error) => { byId("message").textContent = error.message; });
