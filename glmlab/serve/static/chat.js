// glmlab's chat page: a plain OpenAI client of the server that serves it (no build step, no library).
//
// GET /v1/models fills the model menu; POST /v1/chat/completions with stream=true streams the answer as
// server-sent events, read here with fetch + ReadableStream (EventSource cannot POST or send a key).
// The API key lives in sessionStorage (this tab only) and travels in the Authorization header, never
// in a URL. Text from the model is only ever set as text, never parsed as HTML.

const KEY_STORAGE = "glmlab.apiKey";
const MAX_IMAGE_PIXELS = Number(document.body.dataset.maxImagePixels);
// what the server decodes (glmlab.images.PIL_FORMATS) and is sent as the file's own bytes when small enough
const SENT_AS_IS = new Set(["image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp"]);
const BOX_TAG = /(<\|begin_of_box\|>|<\|end_of_box\|>)/;

const $ = (id) => document.getElementById(id);
const state = { messages: [], image: null, controller: null };

class ServerError extends Error {}

// ---- the server ------------------------------------------------------------------------------

function headers(json) {
  const result = {};
  const key = $("api-key").value.trim();
  if (key) result.Authorization = `Bearer ${key}`;
  if (json) result["Content-Type"] = "application/json";
  return result;
}

/** The server's error message (OpenAI's {"error": {"message"}}), with the status in front. */
async function errorMessage(response) {
  const text = await response.text();
  try {
    const message = JSON.parse(text).error.message;
    if (message) return `${response.status}: ${message}`;
  } catch {
    // not OpenAI's error shape: show what came
  }
  return `${response.status} ${response.statusText}${text ? `: ${text.slice(0, 500)}` : ""}`;
}

async function loadModels() {
  let response;
  try {
    response = await fetch("/v1/models", { headers: headers(false), cache: "no-store" });
  } catch (error) {
    showError(`cannot reach the server: ${error.message}`);
    return;
  }
  if (response.status === 503) { // the model is still loading
    const seconds = Number(response.headers.get("Retry-After")) || 2;
    setStatus(`${await errorMessage(response)} (trying again in ${seconds} s)`);
    setTimeout(loadModels, seconds * 1000);
    return;
  }
  if (!response.ok) {
    showError(await errorMessage(response));
    setStatus("");
    return;
  }
  const select = $("model");
  const previous = select.value;
  const models = (await response.json()).data;
  select.replaceChildren(
    ...models.map((model) => new Option(model.parent ? `${model.id} (adapter)` : model.id, model.id)),
  );
  if (models.some((model) => model.id === previous)) select.value = previous;
  showError("");
  setStatus("Ready.");
}

/** The `data:` payloads of a text/event-stream body, one per event, as they arrive. */
async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const data = lines.filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trimStart());
      if (data.length) yield data.join("\n");
    }
  }
}

// ---- the picture -----------------------------------------------------------------------------

function readAsDataURL(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

/** The picture as a data URL of at most MAX_IMAGE_PIXELS pixels, aspect kept (glmlab.client.downscale's rule). */
async function attachImage(file) {
  if (!file.type.startsWith("image/")) {
    showError(`${file.name || "the pasted item"} is not a picture (${file.type || "unknown type"}); choose a PNG, JPEG or WebP file.`);
    return;
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    showError(`${file.name || "the pasted picture"}: this browser cannot read it; save it as PNG or JPEG and try again.`);
    return;
  }
  const { width, height } = bitmap;
  let sent = { width, height };
  let url;
  if (width * height <= MAX_IMAGE_PIXELS && SENT_AS_IS.has(file.type)) {
    url = await readAsDataURL(file);
  } else {
    const scale = Math.min(1, Math.sqrt(MAX_IMAGE_PIXELS / (width * height)));
    sent = { width: Math.max(1, Math.floor(width * scale)), height: Math.max(1, Math.floor(height * scale)) };
    const canvas = document.createElement("canvas");
    canvas.width = sent.width;
    canvas.height = sent.height;
    const context = canvas.getContext("2d");
    context.imageSmoothingQuality = "high";
    context.drawImage(bitmap, 0, 0, sent.width, sent.height);
    url = canvas.toDataURL(file.type === "image/jpeg" ? "image/jpeg" : "image/png", 0.92);
  }
  bitmap.close();
  state.image = { url, name: file.name || "pasted picture", width, height, sent };
  showImage();
  showError("");
}

function showImage() {
  const image = state.image;
  $("preview").hidden = $("remove-image").hidden = !image;
  if (image) $("preview").src = image.url;
  else $("preview").removeAttribute("src");
  let info = "Drop, paste (Ctrl+V) or choose a picture.";
  if (image) {
    info = `${image.name} · ${image.width}×${image.height}`;
    if (image.sent.width !== image.width || image.sent.height !== image.height) {
      info += ` → sent as ${image.sent.width}×${image.sent.height}`;
    }
  }
  $("image-info").textContent = info;
}

function firstImageFile(items) {
  for (const item of items || []) {
    const file = item instanceof File ? item : item.kind === "file" ? item.getAsFile() : null;
    if (file && file.type.startsWith("image/")) return file;
  }
  return null;
}

// ---- the conversation ------------------------------------------------------------------------

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A question and its (empty) answer on the page; returns the parts the stream fills in. */
function addTurn(question, image) {
  const turn = element("article", "turn");
  const user = element("div", "user");
  if (image) {
    const thumbnail = element("img", "thumbnail");
    thumbnail.src = image.url;
    thumbnail.alt = image.name;
    user.append(thumbnail);
  }
  user.append(element("p", "question", question));
  const thinking = element("details", "thinking");
  thinking.hidden = true;
  thinking.append(element("summary", "", "Thinking"), element("div", "thinking-text"));
  const assistant = element("div", "assistant");
  assistant.append(thinking, element("div", "answer"), element("p", "timing"));
  turn.append(user, assistant);
  $("conversation").append(turn);
  return turn;
}

/** The answer as text, with GLM-V's boxed parts (<|begin_of_box|>..<|end_of_box|>) highlighted. */
function showAnswer(turn, text) {
  const parts = [];
  let boxed = false;
  for (const part of text.trim().split(BOX_TAG)) {
    if (part === "<|begin_of_box|>" || part === "<|end_of_box|>") boxed = part === "<|begin_of_box|>";
    else if (part) parts.push(boxed ? element("mark", "box", part) : document.createTextNode(part));
  }
  turn.querySelector(".answer").replaceChildren(...parts);
}

function showThinking(turn, text) {
  const block = turn.querySelector(".thinking");
  if (block.hidden) {
    block.hidden = false;
    block.open = true; // open while the model thinks, closed once it answers
  }
  block.querySelector(".thinking-text").textContent = text.trim();
}

function scrollToEnd() {
  window.scrollTo({ top: document.body.scrollHeight });
}

/** Time to first token, total time, decode speed ((tokens - 1) / decode time, as vLLM's bench) and tokens. */
function timingLine(started, firstToken, ended, usage) {
  const seconds = (ms) => `${(ms / 1000).toFixed(2)} s`;
  const ttft = firstToken === null ? "n/a" : seconds(firstToken - started);
  let line = `first token ${ttft} · total ${seconds(ended - started)}`;
  if (!usage) return `${line} · stopped before the usage came`;
  const out = usage.completion_tokens;
  const speed = firstToken !== null && out > 1 && ended > firstToken
    ? ((out - 1) / ((ended - firstToken) / 1000)).toFixed(1) : "n/a";
  const images = usage.prompt_tokens_details?.image_tokens ?? 0;
  line += ` · ${speed} tokens/s · tokens in ${usage.prompt_tokens} (${images} image) / out ${out}`;
  return line;
}

function requestBody(messages) {
  const body = {
    model: $("model").value || undefined,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    chat_template_kwargs: { enable_thinking: $("thinking").checked },
  };
  for (const [field, id] of [["max_tokens", "max-tokens"], ["temperature", "temperature"]]) {
    const value = $(id).value.trim();
    if (value !== "") body[field] = Number(value); // a bad value gets the server's 400, which names it
  }
  return body;
}

async function ask(event) {
  event.preventDefault();
  if (state.controller) return;
  const question = $("question").value.trim();
  if (!question) {
    showError("type a question first (the picture is optional).");
    return;
  }
  const image = state.image;
  const content = image
    ? [{ type: "image_url", image_url: { url: image.url } }, { type: "text", text: question }]
    : question;
  const userMessage = { role: "user", content };
  const body = requestBody([...state.messages, userMessage]);
  const turn = addTurn(question, image);
  $("question").value = "";
  state.image = null;
  showImage();
  showError("");
  scrollToEnd();

  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  setStatus("Waiting for the model…");
  const started = performance.now();
  let firstToken = null;
  let usage = null;
  let finish = null;
  let answer = "";
  let thinking = "";
  let outcome = "done";
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(true),
      body: JSON.stringify(body),
      signal: controller.signal,
      cache: "no-store",
    });
    if (!response.ok) throw new ServerError(await errorMessage(response));
    setStatus("Generating…");
    for await (const data of serverSentEvents(response.body)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ServerError(chunk.error.message); // after the headers, errors are events
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const delta = choice.delta || {};
        if (delta.reasoning_content) {
          firstToken ??= performance.now();
          thinking += delta.reasoning_content;
          showThinking(turn, thinking);
        }
        if (delta.content) {
          firstToken ??= performance.now();
          if (!answer) turn.querySelector(".thinking").open = false; // answering: fold the thinking away
          answer += delta.content;
          showAnswer(turn, answer);
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      scrollToEnd();
    }
  } catch (error) {
    outcome = error.name === "AbortError" ? "stopped" : "failed";
    if (outcome === "failed") {
      showError(error instanceof ServerError ? error.message : `the request failed: ${error.message}`);
    }
  }
  const ended = performance.now();
  state.controller = null;
  setBusy(false);
  if (outcome === "failed") { // take the question back, to ask again (another key, fewer tokens, ...)
    turn.remove();
    $("question").value ||= question;
    state.image ||= image;
    showImage();
    setStatus("Failed.");
    return;
  }
  turn.querySelector(".timing").textContent = timingLine(started, firstToken, ended, usage);
  // trimmed, as glmlab.answer.split_thinking does: what the API answers without streaming; not
  // kept when "New chat" stopped it
  if ((answer || thinking) && turn.isConnected) {
    state.messages.push(userMessage, { role: "assistant", content: answer.trim() });
  }
  setStatus(
    outcome === "stopped"
      ? `Stopped: kept ${answer.trim().length} characters.`
      : finish === "length"
        ? "Done: stopped at max tokens."
        : "Done.",
  );
  $("question").focus();
}

function newChat() {
  state.controller?.abort();
  state.messages = [];
  $("conversation").replaceChildren();
  showError("");
  setStatus("Ready.");
}

// ---- the page --------------------------------------------------------------------------------

function setBusy(busy) {
  $("ask").disabled = busy;
  $("stop").disabled = !busy;
}

function setStatus(text) {
  $("status").textContent = text;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function start() {
  const key = $("api-key");
  key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("change", () => {
    if (key.value.trim()) sessionStorage.setItem(KEY_STORAGE, key.value.trim());
    else sessionStorage.removeItem(KEY_STORAGE);
    loadModels();
  });
  $("composer").addEventListener("submit", ask);
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("new-chat").addEventListener("click", newChat);
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") state.controller?.abort();
  });
  $("image-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = ""; // the same file can be chosen again
    if (file) attachImage(file);
  });
  $("remove-image").addEventListener("click", () => {
    state.image = null;
    showImage();
  });
  document.addEventListener("paste", (event) => {
    const file = firstImageFile(event.clipboardData?.items);
    if (file) {
      event.preventDefault();
      attachImage(file);
    }
  });
  const zone = $("drop-zone");
  document.addEventListener("dragover", (event) => {
    event.preventDefault(); // allow dropping anywhere on the page
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault(); // never navigate to the dropped file
    zone.classList.remove("dragging");
    const file = firstImageFile(event.dataTransfer?.files);
    if (file) attachImage(file);
    else if (event.dataTransfer?.files.length) showError("drop a picture (PNG, JPEG, WebP).");
  });
  loadModels();
}

start();
