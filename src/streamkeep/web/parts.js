// Applies UI Message Stream chunks to a message, giving the same `parts` the server
// stores (AI SDK UIMessage shapes), so a live reply and a reloaded one render alike.

export function liveMessage(fields = {}) {
  return {
    id: null,
    role: "assistant",
    parts: [],
    status: "streaming",
    usage: null,
    error: null,
    finish_reason: null,
    sibling_ids: [],
    ...fields,
  };
}

function block(msg, type, id) {
  for (let i = msg.parts.length - 1; i >= 0; i--) {
    const p = msg.parts[i];
    if (p.type === type && (p._id === id || id === undefined)) return p;
  }
  const p = { type, text: "", state: "streaming", _id: id };
  msg.parts.push(p);
  return p;
}

function tool(msg, chunk) {
  let p = msg.parts.find((x) => x.toolCallId === chunk.toolCallId);
  if (!p) {
    p = {
      type: `tool-${chunk.toolName || "call"}`,
      toolCallId: chunk.toolCallId,
      state: "input-streaming",
      inputText: "",
    };
    msg.parts.push(p);
  }
  return p;
}

/** Apply one chunk; returns true when the chunk changed what is shown. */
export function applyChunk(msg, chunk) {
  switch (chunk.type) {
    case "start":
      if (chunk.messageId) msg.id = chunk.messageId;
      if (chunk.messageMetadata) applyMetadata(msg, chunk.messageMetadata);
      return true;
    case "text-start":
    case "reasoning-start":
      block(msg, chunk.type.split("-")[0], chunk.id);
      return true;
    case "text-delta":
    case "reasoning-delta":
      block(msg, chunk.type.split("-")[0], chunk.id).text += chunk.delta || "";
      return true;
    case "text-end":
    case "reasoning-end":
      block(msg, chunk.type.split("-")[0], chunk.id).state = "done";
      return true;
    case "tool-input-start":
      tool(msg, chunk);
      return true;
    case "tool-input-delta":
      tool(msg, chunk).inputText += chunk.inputTextDelta || "";
      return true;
    case "tool-input-available":
      Object.assign(tool(msg, chunk), { state: "input-available", input: chunk.input });
      return true;
    case "tool-input-error":
      Object.assign(tool(msg, chunk), {
        state: "output-error",
        input: chunk.input,
        errorText: chunk.errorText,
      });
      return true;
    case "tool-output-available":
      Object.assign(tool(msg, chunk), { state: "output-available", output: chunk.output });
      return true;
    case "tool-output-error":
      Object.assign(tool(msg, chunk), { state: "output-error", errorText: chunk.errorText });
      return true;
    case "message-metadata":
      applyMetadata(msg, chunk.messageMetadata || {});
      return true;
    case "error":
      msg.error = chunk.errorText || "The model failed.";
      msg.status = "error";
      return true;
    case "abort":
      msg.status = "stopped";
      return true;
    case "finish":
      if (chunk.finishReason) msg.finish_reason = chunk.finishReason;
      if (msg.status === "streaming") msg.status = "complete";
      return true;
    default:
      return false; // start-step, finish-step, data-*: nothing to show
  }
}

function applyMetadata(msg, meta) {
  if (meta.status) msg.status = meta.status;
  if (meta.usage) msg.usage = meta.usage;
  if (meta.model) msg.model = meta.model;
  if (meta.finishReason) msg.finish_reason = meta.finishReason;
  if (meta.finish_reason) msg.finish_reason = meta.finish_reason;
  if (meta.error) msg.error = meta.error;
}

/** The plain text of a message (for copying and editing). */
export function textOf(msg) {
  return msg.parts
    .filter((p) => p.type === "text")
    .map((p) => p.text)
    .join("");
}
