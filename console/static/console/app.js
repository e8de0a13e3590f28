// Tauon console: upload with progress, live job progress bars, copy buttons. No framework.
"use strict";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 1000;

function csrfToken(form) {
  const field = form && form.querySelector("[name=csrfmiddlewaretoken]");
  if (field) return field.value;
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

// The API answers errors as {"error": {"code", "message", "field"}}; anything else gets a generic line.
function apiError(status, text) {
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) return body.error.message;
    if (body && body.detail) return body.detail;
  } catch (e) { /* not JSON */ }
  if (status === 413) return "The file is larger than the server accepts.";
  if (status === 0) return "The server could not be reached; check your connection and try again.";
  return `The server answered HTTP ${status}.`;
}

function setBar(el, fraction, label, status) {
  const pct = Math.round(Math.max(0, Math.min(1, fraction || 0)) * 100);
  el.querySelector(".bar").style.width = pct + "%";
  el.querySelector(".label").textContent = label !== undefined ? label : pct + "%";
  el.setAttribute("aria-valuenow", String(pct));
  if (status) {
    el.dataset.jobStatus = status;
    el.className = el.className.replace(/\bstatus-\S+/g, "").trim() + " status-" + status;
  }
}

function jobLabel(job) {
  const pct = Math.round((job.progress || 0) * 100) + "%";
  if (job.status === "failed") return "failed: " + (job.error || "no reason given");
  if (job.status === "cancelled") return "cancelled";
  if (job.status === "queued") return "queued, waiting for a worker";
  return job.progress_message ? `${pct} · ${job.progress_message}` : pct;
}

function jobIdFrom(body) {
  for (const key of ["import_job", "job", "import_job_id", "job_id"]) {
    const value = body && body[key];
    if (typeof value === "number" || typeof value === "string") return String(value);
    if (value && value.id !== undefined) return String(value.id);
  }
  return null;
}

// Poll GET /api/jobs/{id}/ for one progress bar until its job ends.
function watchJob(el, onEnd) {
  const id = el.dataset.jobId;
  let failures = 0;
  const tick = async () => {
    let job;
    try {
      const resp = await fetch(`/api/jobs/${id}/`, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!resp.ok) throw new Error(apiError(resp.status, await resp.text()));
      job = await resp.json();
      failures = 0;
    } catch (err) {
      failures += 1;
      if (failures > 30) { el.querySelector(".label").textContent = "progress unavailable: " + err.message; return; }
      setTimeout(tick, POLL_MS * Math.min(failures, 5));
      return;
    }
    setBar(el, job.progress, jobLabel(job), job.status);
    document.querySelectorAll(`[data-job-badge="${id}"]`).forEach((badge) => {
      badge.textContent = job.status;
      badge.className = "badge status-" + job.status;
    });
    document.querySelectorAll(`[data-job-log="${id}"]`).forEach((log) => {
      if (Array.isArray(job.log) && job.log.length) log.textContent = job.log.join("\n");
    });
    if (!TERMINAL.has(job.status)) { setTimeout(tick, POLL_MS); return; }
    if (onEnd) onEnd(job);
    if (el.hasAttribute("data-reload-on-finish")) setTimeout(() => window.location.reload(), 400);
  };
  tick();
}

function newJobBar(id) {
  const el = document.createElement("div");
  el.className = "progress job-progress status-queued";
  el.dataset.jobId = id;
  el.setAttribute("role", "progressbar");
  el.innerHTML = '<div class="bar"></div><span class="label">import queued</span>';
  return el;
}

function showError(form, message) {
  const box = form.querySelector(".form-error");
  box.textContent = message;
  box.hidden = !message;
}

// After the API accepted a new version: follow its import job, then reload to show the version.
function followImport(form, body) {
  const id = jobIdFrom(body);
  if (!id) { window.location.reload(); return; }
  const bar = newJobBar(id);
  form.querySelector(".job-slot").replaceChildren(bar);
  watchJob(bar, (job) => {
    if (job.status === "succeeded") { setTimeout(() => window.location.reload(), 400); return; }
    showError(form, "Import " + jobLabel(job) + " Reload the page to see the version's status.");
  });
}

function setupUpload(form) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    showError(form, "");
    const file = form.querySelector("input[type=file]").files[0];
    if (!file) { showError(form, "Choose a .zip, .tar.gz or .gguf file first."); return; }
    const data = new FormData(form);
    data.delete("csrfmiddlewaretoken");
    if (!data.get("parent")) data.delete("parent");
    const status = form.querySelector(".upload-status");
    const bar = form.querySelector(".upload-progress");
    const button = form.querySelector("button[type=submit]");
    status.hidden = false;
    form.querySelector(".job-slot").replaceChildren();
    setBar(bar, 0, `Uploading ${file.name}… 0%`, "running");
    button.disabled = true;

    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.dataset.uploadUrl);
    xhr.setRequestHeader("X-CSRFToken", csrfToken(form));
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      const fraction = e.loaded / e.total;
      setBar(bar, fraction, `Uploading ${file.name}… ${Math.round(fraction * 100)}%`);
    };
    xhr.onload = () => {
      button.disabled = false;
      if (xhr.status >= 200 && xhr.status < 300) {
        setBar(bar, 1, `Uploaded ${file.name}`, "succeeded");
        let body = {};
        try { body = JSON.parse(xhr.responseText); } catch (e) { /* keep {} */ }
        followImport(form, body);
      } else {
        setBar(bar, 1, "Upload refused", "failed");
        showError(form, apiError(xhr.status, xhr.responseText));
      }
    };
    xhr.onerror = () => {
      button.disabled = false;
      setBar(bar, 1, "Upload failed", "failed");
      showError(form, apiError(0, ""));
    };
    xhr.send(data);
  });
}

function setupHubImport(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(form, "");
    const payload = { hub_id: form.elements.hub_id.value.trim() };
    if (form.elements.revision && form.elements.revision.value.trim()) payload.revision = form.elements.revision.value.trim();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    button.textContent = "Checking the hub…";
    try {
      const resp = await fetch(form.dataset.uploadUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken(form) },
        body: JSON.stringify(payload),
      });
      const text = await resp.text();
      if (!resp.ok) { showError(form, apiError(resp.status, text)); return; }
      form.querySelector(".upload-status").hidden = false;
      followImport(form, JSON.parse(text || "{}"));
    } catch (err) {
      showError(form, apiError(0, ""));
    } finally {
      button.disabled = false;
      button.textContent = "Import";
    }
  });
}

function setupCopy(button) {
  button.addEventListener("click", async () => {
    const input = document.querySelector(button.dataset.copy);
    input.select();
    try { await navigator.clipboard.writeText(input.value); } catch (e) { document.execCommand("copy"); }
    button.textContent = "Copied";
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll(".progress[data-job-id]").forEach((el) => {
    if (!TERMINAL.has(el.dataset.jobStatus)) watchJob(el);
  });
  document.querySelectorAll("#upload-form").forEach(setupUpload);
  document.querySelectorAll("#hub-form").forEach(setupHubImport);
  document.querySelectorAll("[data-copy]").forEach(setupCopy);
});
