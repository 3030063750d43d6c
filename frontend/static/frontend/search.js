// The search page: pick, drop or paste an image, shrink it in the browser, send it to
// POST /api/search/ as base64 JSON, and show the results grid. Without JavaScript the same
// form posts the file to the page itself, which renders the grid on the server.
(() => {
  const MAX_SIDE = 640; // the model looks at 224 px; more only slows slow connections
  const root = document.getElementById("search");
  const form = document.getElementById("search-form");
  const dropzone = document.getElementById("dropzone");
  const fileInput = document.getElementById("file");
  const preview = document.getElementById("preview");
  const button = document.getElementById("search-button");
  const topK = document.getElementById("top-k");
  const minSimilarity = document.getElementById("min-similarity");
  const tagBoxes = [...document.querySelectorAll("#tags input[name=tags]")];
  const spinner = document.getElementById("spinner");
  const message = document.getElementById("message");
  const results = document.getElementById("results");
  const template = document.getElementById("result-template");
  const maxBytes = Number(root.dataset.maxBytes);
  const csrfToken = form.querySelector("[name=csrfmiddlewaretoken]").value;

  let query = null; // {image: dataURL} or {image_id: N}, what the next search sends
  let busy = false;
  let searchAgain = false;

  function say(text, isError = false) {
    message.textContent = text;
    message.classList.toggle("error", isError);
  }

  function setBusy(value) {
    busy = value;
    spinner.hidden = !value;
    results.setAttribute("aria-busy", String(value));
    button.disabled = value || !query;
  }

  function readAsDataURL(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  }

  // A JPEG of at most MAX_SIDE pixels on the longest side, upright (EXIF applied).
  async function downscale(file) {
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    const context = canvas.getContext("2d");
    context.fillStyle = "#fff"; // transparent pixels become white, as on the server
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    return canvas.toDataURL("image/jpeg", 0.9);
  }

  async function choose(file) {
    if (!file || busy) return;
    query = null;
    button.disabled = true;
    if (file.type && !file.type.startsWith("image/")) {
      preview.hidden = true;
      return say("That file is not an image. Choose a JPEG, PNG, WebP or GIF picture.", true);
    }
    let dataUrl;
    try {
      dataUrl = await downscale(file);
    } catch {
      // The browser cannot decode it (TIFF, say): let the server judge the original.
      if (file.size > maxBytes) {
        return say(`The image is larger than ${(maxBytes / 1048576).toFixed(0)} MB.`, true);
      }
      dataUrl = await readAsDataURL(file);
    }
    preview.src = dataUrl;
    preview.hidden = false;
    query = { image: dataUrl };
    button.disabled = false;
    say("Ready: press Search.");
  }

  async function search() {
    if (!query) return;
    if (busy) {
      searchAgain = true; // a toggle changed meanwhile: its search runs once this one ends
      return;
    }
    setBusy(true);
    say("Searching…");
    try {
      const response = await fetch(root.dataset.searchUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
        body: JSON.stringify({
          ...query,
          top_k: Number(topK.value),
          min_similarity: Number(minSimilarity.value) || 0,
          tags: chosenTags(),
        }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) return say(explain(response.status, body), true);
      render(body);
    } catch {
      say("The search service could not be reached. Check your connection and try again.", true);
    } finally {
      setBusy(false);
      if (searchAgain) {
        searchAgain = false;
        search();
      }
    }
  }

  function chosenTags() {
    return tagBoxes.filter((box) => box.checked).map((box) => box.value).sort();
  }

  // The chosen tags live in the page's URL (?tags=a,b), so a filtered search can be shared.
  function rememberTags() {
    const url = new URL(window.location.href);
    const tags = chosenTags();
    if (tags.length) url.searchParams.set("tags", tags.join(","));
    else url.searchParams.delete("tags");
    window.history.replaceState(null, "", url);
  }

  function explain(status, body) {
    if (status === 429) return "Too many searches in a short time. Wait a little, then try again.";
    if (status >= 500) return "The search service is unavailable right now. Try again in a moment.";
    return body.detail || "The search failed. Try another image.";
  }

  function render(body) {
    results.replaceChildren(...body.results.map(resultItem));
    if (body.results.length) document.getElementById("empty-catalog")?.remove();
    const count = body.results.length;
    if (count === 0) {
      say(Number(root.dataset.catalogSize) === 0
        ? "The catalog is empty, so there is nothing to find yet."
        : "No similar images found.");
      return;
    }
    say(`${count} result${count === 1 ? "" : "s"} in ${Math.round(body.took_ms)} ms.`);
  }

  function resultItem(hit) {
    const item = template.content.firstElementChild.cloneNode(true);
    item.querySelector(".result-link").href = hit.image_url;
    const image = item.querySelector(".result-image");
    image.src = hit.thumbnail_url;
    image.alt = hit.title;
    item.querySelector(".result-title").textContent = hit.title;
    item.querySelector(".result-similarity").textContent = `${hit.similarity.toFixed(1)}%`;
    item.querySelector("[name=image_id]").value = hit.id;
    const similar = item.querySelector(".similar-button");
    similar.dataset.imageId = hit.id;
    similar.setAttribute("aria-label", `Find images similar to ${hit.title}`);
    return item;
  }

  // "Find similar" posts a form without JavaScript; with it, search by the image's id.
  results.addEventListener("submit", (event) => {
    event.preventDefault();
    const imageId = Number(event.target.querySelector("[name=image_id]").value);
    query = { image_id: imageId };
    preview.src = event.target.closest(".result").querySelector(".result-image").src;
    preview.hidden = false;
    search();
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  fileInput.addEventListener("change", () => choose(fileInput.files[0]));
  tagBoxes.forEach((box) =>
    box.addEventListener("change", () => {
      rememberTags();
      search(); // again, with the picture already chosen (nothing happens without one)
    }),
  );
  dropzone.addEventListener("click", (event) => {
    if (event.target !== fileInput && !event.target.closest("label")) fileInput.click();
  });
  dropzone.addEventListener("keydown", (event) => {
    if (event.target === dropzone && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      fileInput.click();
    }
  });
  dropzone.addEventListener("dragover", (event) => {
    event.preventDefault();
    dropzone.classList.add("over");
  });
  dropzone.addEventListener("dragleave", () => dropzone.classList.remove("over"));
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropzone.classList.remove("over");
    choose(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const item = [...event.clipboardData.items].find((i) => i.type.startsWith("image/"));
    if (item) choose(item.getAsFile());
  });

  document.documentElement.classList.add("js");
  button.disabled = true; // until an image is ready
})();
