// The search page: drop, paste or pick an image; post it as base64; show the results grid.
(() => {
  const root = document.getElementById("search");
  const dropzone = document.getElementById("dropzone");
  const fileInput = document.getElementById("file");
  const preview = document.getElementById("preview");
  const message = document.getElementById("message");
  const results = document.getElementById("results");
  const maxBytes = Number(root.dataset.maxBytes);

  function say(text, isError = false) {
    message.textContent = text;
    message.classList.toggle("error", isError);
  }

  function readAsDataURL(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  async function search(file) {
    if (!file) return;
    if (!file.type.startsWith("image/")) return say("That is not an image file.", true);
    if (file.size > maxBytes) return say(`The image is larger than ${(maxBytes / 1048576).toFixed(1)} MB.`, true);
    const dataUrl = await readAsDataURL(file);
    preview.src = dataUrl;
    preview.hidden = false;
    say("Searching…");
    try {
      const response = await fetch(root.dataset.searchUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ image: dataUrl, top_k: Number(root.dataset.topK) }),
      });
      const body = await response.json();
      if (!response.ok) return say(body.detail || "The search failed.", true);
      render(body);
    } catch (error) {
      say(`The search failed: ${error.message}`, true);
    }
  }

  function render(body) {
    results.replaceChildren(...body.results.map((hit) => {
      const item = document.createElement("li");
      const image = document.createElement("img");
      image.src = hit.thumbnail_url;
      image.alt = hit.title;
      image.loading = "lazy";
      const caption = document.createElement("p");
      const title = document.createElement("span");
      title.textContent = hit.title;
      const similarity = document.createElement("strong");
      similarity.textContent = `${hit.similarity.toFixed(1)}%`;
      caption.append(title, similarity);
      item.append(image, caption);
      return item;
    }));
    const count = body.results.length;
    say(`${count} result${count === 1 ? "" : "s"} in ${Math.round(body.took_ms)} ms.` +
      (body.warning ? ` ${body.warning}` : ""));
  }

  fileInput.addEventListener("change", () => search(fileInput.files[0]));
  dropzone.addEventListener("dragover", (event) => { event.preventDefault(); dropzone.classList.add("over"); });
  dropzone.addEventListener("dragleave", () => dropzone.classList.remove("over"));
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropzone.classList.remove("over");
    search(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const item = [...event.clipboardData.items].find((i) => i.type.startsWith("image/"));
    if (item) search(item.getAsFile());
  });
})();
