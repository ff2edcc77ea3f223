// ragtune label: the page. Plain JavaScript, no library, nothing from the network but this server's API.
// Text from the corpus and the questions is always set as textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null; // {question, refused, marked: Set of chunk ids} of the question being judged
let latest = null; // the last state from the server
let busy = false;

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
  };
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("the server does not answer (stopped?): " + err.message);
  }
  const data = await response.json().catch(() => ({error: "HTTP " + response.status}));
  if (!response.ok) throw new Error(data.error || "HTTP " + response.status);
  return data;
}

function say(text, kind) {
  const message = $("message");
  message.textContent = text;
  message.className = kind || "";
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// --- the state: counts, recommendation, queue, judged questions ---------------------------------

function renderState(state) {
  latest = state;
  $("counts").textContent =
    state.counts.labelled + " labelled · " + state.counts.none + " with no relevant chunk";
  $("files").textContent = "Labels: " + state.out + " · none: " + state.none_file + " · arms: " +
    state.arms.join(", ") + " · top " + state.k + " of each";
  renderRecommendation(state.recommendation);
  renderQueue(state.queue);
  const list = $("judgements");
  list.replaceChildren();
  for (const j of state.judgements.slice().reverse()) {
    const item = element("li");
    item.dataset.id = j.id;
    const edit = element("button", "Edit");
    edit.type = "button";
    edit.addEventListener("click", () => show(j.question));
    item.append(edit, element("span", j.question), element("span",
      j.relevant_ids.length ? " — " + j.relevant_ids.length + " relevant" : " — none", "quiet"));
    list.append(item);
  }
}

function renderRecommendation(rec) {
  $("statement").textContent = rec.statement;
  const table = $("scores");
  table.replaceChildren();
  if (!rec.scores || !rec.questions) return;
  const head = element("tr");
  head.append(element("th", "arm"), element("th", "MRR on " + rec.questions + " questions"));
  table.append(head);
  for (const [arm, score] of Object.entries(rec.scores).sort((a, b) => b[1] - a[1])) {
    const row = element("tr", undefined, arm === rec.arm ? "chosen" : "");
    row.dataset.arm = arm;
    row.append(element("td", arm), element("td", score.toFixed(3)));
    table.append(row);
  }
}

function renderQueue(queue) {
  $("queue").hidden = !queue;
  if (!queue) return;
  const where = queue.question === null ? "every question judged or skipped" : "question " + queue.position;
  $("queue-info").textContent = queue.file + ": " + where + " of " + queue.total + " (" + queue.judged +
    " judged, " + queue.skipped + " skipped)";
  $("next").disabled = queue.question === null;
  $("skip").disabled = queue.question === null;
}

// --- judging one question ---------------------------------------------------------------------------

function chunkCard(chunk) {
  const card = element("article", undefined, "chunk");
  card.dataset.id = chunk.id;
  const label = element("label");
  const box = element("input");
  box.type = "checkbox";
  box.addEventListener("change", () => mark(chunk.id, box.checked));
  label.append(box, element("strong", chunk.title || "(no title)"), element("code", chunk.id));
  card.append(label, element("p", chunk.text));
  return card;
}

function mark(id, on) {
  if (on) current.marked.add(id); else current.marked.delete(id);
  syncMarks();
}

function syncMarks() {
  for (const card of document.querySelectorAll("#judging .chunk")) {
    const on = current.marked.has(card.dataset.id);
    card.classList.toggle("marked", on);
    card.querySelector("input").checked = on;
  }
  const n = current ? current.marked.size : 0;
  $("save").textContent = "Save: " + n + " relevant";
  $("save").disabled = busy || !current || current.refused || n === 0;
  $("none").disabled = busy || !current || current.refused;
}

async function show(question) {
  if (!question.trim()) return;
  say("Ranking with every arm…");
  let data;
  try {
    data = await api("/api/candidates", {question});
  } catch (err) {
    say(err.message, "error");
    return;
  }
  current = {question: data.question, refused: data.refused, marked: new Set(data.marked)};
  $("question").value = data.question;
  $("judging").hidden = false;
  $("judging-question").textContent = data.question;
  $("candidates").replaceChildren(...data.candidates.map(chunkCard));
  $("elsewhere").replaceChildren(...data.marked_elsewhere.map(chunkCard));
  $("elsewhere-wrap").hidden = data.marked_elsewhere.length === 0;
  $("found").replaceChildren();
  $("find-info").textContent = "";
  syncMarks();
  if (data.refused) say("Refused: " + data.refused, "error");
  else if (data.judged === "labelled") say("Judged before: change the marks and save to edit.");
  else if (data.judged === "none") say("Judged before as having no relevant chunk: mark chunks and save to edit.");
  else say(data.candidates.length + " candidates: mark the relevant ones.");
}

async function judge(relevant) {
  busy = true;
  syncMarks();
  say("Saving…");
  try {
    const state = await api("/api/judge", {question: current.question, relevant_ids: relevant});
    const saved = state.saved;
    renderState(state);
    say("Saved: \"" + saved.question + "\", " + (saved.relevant_ids.length ? saved.relevant_ids.length +
      " relevant" : "none relevant") + " (" + saved.id + ")", "saved");
    current = null;
    $("judging").hidden = true;
    $("question").value = "";
  } catch (err) {
    say("Not saved: " + err.message, "error");
  } finally {
    busy = false;
    syncMarks();
  }
}

async function find(text) {
  try {
    const data = await api("/api/find?q=" + encodeURIComponent(text));
    $("found").replaceChildren(...data.chunks.map(chunkCard));
    $("find-info").textContent = data.total > data.chunks.length
      ? data.total + " chunks match; the first " + data.chunks.length + " shown, type more words to narrow"
      : data.total + " chunks match";
    syncMarks();
  } catch (err) {
    say(err.message, "error");
  }
}

// --- wiring -------------------------------------------------------------------------------------

$("ask-form").addEventListener("submit", (event) => {
  event.preventDefault();
  show($("question").value);
});
$("find-form").addEventListener("submit", (event) => {
  event.preventDefault();
  find($("find-text").value);
});
$("save").addEventListener("click", () => judge([...current.marked]));
$("none").addEventListener("click", () => judge([]));
$("next").addEventListener("click", () => latest.queue.question !== null && show(latest.queue.question));
$("skip").addEventListener("click", async () => {
  try {
    renderState(await api("/api/skip", {question: latest.queue.question}));
    current = null;
    $("judging").hidden = true;
    if (latest.queue.question !== null) show(latest.queue.question);
  } catch (err) {
    say(err.message, "error");
  }
});

api("/api/state").then((state) => {
  renderState(state);
  say("Ready.");
}).catch((err) => say(err.message, "error"));
