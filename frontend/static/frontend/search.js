// The search page: pick, drop or paste an image, shrink it in the browser, send it to
// POST /api/search/ as base64 JSON, and show the results grid. Without JavaScript the same
// form posts the file to the page itself, which renders the grid on the server.
(() => {
  const MAX_SIDE = 640; // the model looks at 224 px; more only slows slow connections
  const MIN_DRAG_PX = 8; // a shorter drag on the picture is a click, not a region
  const KEY_STEP = 0.05; // an arrow key moves or resizes the region by 5% of the picture
  const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
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
  const frame = document.getElementById("region-frame");
  const regionBox = document.getElementById("region");
  const regionTools = document.getElementById("region-tools");
  const regionSelect = document.getElementById("region-select");
  const regionClear = document.getElementById("region-clear");
  const regionStatus = document.getElementById("region-status");
  const regionHelp = document.getElementById("region-help");
  const regionHint = document.getElementById("region-hint");
  const urlBox = document.getElementById("url-search"); // absent when search by URL is off
  const urlInput = document.getElementById("image-url");
  const maxBytes = Number(root.dataset.maxBytes);
  const csrfToken = form.querySelector("[name=csrfmiddlewaretoken]").value;

  let query = null; // {image: dataURL}, {image_id: N} or {url: "https://..."}: the next search
  let busy = false;
  let searchAgain = false;
  let source = null; // the chosen picture, full size and upright (an ImageBitmap), to crop from
  let region = null; // {x, y, width, height} in the source's pixels; null: the whole picture
  let drag = null; // the pointer drag in progress on the picture

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

  // A JPEG of `area` of the picture (all of it by default), at most MAX_SIDE pixels on the
  // longest side. Cropping the original before shrinking keeps a small region's detail.
  function encode(bitmap, area = { x: 0, y: 0, width: bitmap.width, height: bitmap.height }) {
    const scale = Math.min(1, MAX_SIDE / Math.max(area.width, area.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(area.width * scale));
    canvas.height = Math.max(1, Math.round(area.height * scale));
    const context = canvas.getContext("2d");
    context.fillStyle = "#fff"; // transparent pixels become white, as on the server
    context.fillRect(0, 0, canvas.width, canvas.height);
    const { x, y, width, height } = area;
    context.drawImage(bitmap, x, y, width, height, 0, 0, canvas.width, canvas.height);
    return canvas.toDataURL("image/jpeg", 0.9);
  }

  async function choose(file) {
    if (!file || busy) return;
    query = null;
    forgetUrl();
    button.disabled = true;
    setSource(null);
    if (file.type && !file.type.startsWith("image/")) {
      showPreview(null);
      return say("That file is not an image. Choose a JPEG, PNG, WebP or GIF picture.", true);
    }
    let bitmap = null;
    let dataUrl;
    try {
      // Upright (EXIF applied) and at full size: the whole picture and any region come from it.
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
      dataUrl = encode(bitmap);
    } catch {
      bitmap?.close();
      bitmap = null;
      // The browser cannot decode it (TIFF, say): let the server judge the original.
      if (file.size > maxBytes) {
        return say(`The image is larger than ${(maxBytes / 1048576).toFixed(0)} MB.`, true);
      }
      dataUrl = await readAsDataURL(file);
    }
    showPreview(dataUrl);
    setSource(bitmap);
    query = { image: dataUrl };
    button.disabled = false;
    say(bitmap ? "Ready: searching the whole picture. Press Search." : "Ready: press Search.");
  }

  // A picture on the web: the server fetches it, so the browser needs neither to read it nor
  // to show it (the preview is only a courtesy), and there is no region tool.
  function chooseUrl(text) {
    if (busy) return;
    const url = text.trim();
    if (!isWebAddress(url)) {
      return say("Enter the picture's web address, starting with http:// or https://.", true);
    }
    urlInput.value = url;
    query = { url };
    setSource(null);
    showPreview(url);
    button.disabled = false;
    say("Ready: the picture at that address will be searched. Press Search.");
  }

  function isWebAddress(text) {
    try {
      return ["http:", "https:"].includes(new URL(text).protocol);
    } catch {
      return false;
    }
  }

  // The address field shows the query only while it is one.
  function forgetUrl() {
    if (urlInput) urlInput.value = "";
  }

  // Where a paste would type text, it is the field's to take.
  function typingIn(element) {
    if (element === urlInput) return false;
    if (element.isContentEditable || element instanceof HTMLTextAreaElement) return true;
    const notText = ["button", "checkbox", "color", "file", "radio", "range", "reset", "submit"];
    return element instanceof HTMLInputElement && !notText.includes(element.type);
  }

  function showPreview(src) {
    if (src) preview.src = src;
    preview.hidden = frame.hidden = !src;
  }

  // The picture regions are cut from; null where there is none to cut (a catalog image
  // searched by its id, a file only the server can decode): the region tool goes away.
  function setSource(bitmap) {
    source?.close();
    source = bitmap;
    drag = null;
    setRegion(null);
    regionTools.hidden = !source;
    frame.classList.toggle("selectable", Boolean(source));
    if (source) frame.tabIndex = 0;
    else frame.removeAttribute("tabindex");
  }

  // Select `area` (in the source's pixels, kept inside the picture), or the whole picture.
  // A drag draws on every move; it announces the region once, when it ends.
  function setRegion(area, announce = true) {
    region = area && source ? insidePicture(area) : null;
    regionBox.hidden = regionClear.hidden = !region;
    regionSelect.hidden = Boolean(region);
    if (region) {
      // Shares of the picture: the same pixels stay selected when the window resizes.
      const share = (part, whole) => `${(part / whole) * 100}%`;
      regionBox.style.left = share(region.x, source.width);
      regionBox.style.top = share(region.y, source.height);
      regionBox.style.width = share(region.width, source.width);
      regionBox.style.height = share(region.height, source.height);
    }
    if (!announce || !source) return;
    regionStatus.textContent = describe(region);
    if (!query || busy) return;
    const ready = region
      ? `Ready: searching the selected region (${region.width} x ${region.height} px).`
      : "Ready: searching the whole picture.";
    // Moving the region keeps its size: nothing new to say twice to a screen reader.
    if (message.textContent !== `${ready} Press Search.`) say(`${ready} Press Search.`);
  }

  function describe(area) {
    if (!area) return "Searching the whole picture.";
    const percent = (part, whole) => `${Math.round((part / whole) * 1000) / 10}%`;
    const [width, height] = [source.width, source.height];
    return (
      `Region: ${percent(area.width, width)} wide, ${percent(area.height, height)} high, ` +
      `${percent(area.x, width)} from the left, ${percent(area.y, height)} from the top.`
    );
  }

  function insidePicture({ x, y, width, height }) {
    const w = Math.min(source.width, Math.max(1, Math.round(width)));
    const h = Math.min(source.height, Math.max(1, Math.round(height)));
    return {
      x: Math.min(source.width - w, Math.max(0, Math.round(x))),
      y: Math.min(source.height - h, Math.max(0, Math.round(y))),
      width: w,
      height: h,
    };
  }

  function selectCentre() {
    const { width, height } = source;
    setRegion({ x: width / 4, y: height / 4, width: width / 2, height: height / 2 });
  }

  // Where a pointer is over the picture, in the source's pixels (held to its edges).
  function pictureAt(event) {
    const box = preview.getBoundingClientRect();
    const within = (value, max) => Math.min(max, Math.max(0, value));
    return {
      x: within(((event.clientX - box.left) / box.width) * source.width, source.width),
      y: within(((event.clientY - box.top) / box.height) * source.height, source.height),
    };
  }

  // A drag that starts inside the region moves it; anywhere else it draws a new one.
  function startDrag(event) {
    if (!source || !event.isPrimary || event.button !== 0) return;
    event.preventDefault(); // no text selection, no dragging the image away
    // Focus for the keys, without scrolling a half-visible picture: the drag starts where
    // the pointer went down.
    frame.focus({ preventScroll: true });
    frame.setPointerCapture(event.pointerId);
    const start = pictureAt(event);
    const inside =
      region &&
      start.x >= region.x &&
      start.x <= region.x + region.width &&
      start.y >= region.y &&
      start.y <= region.y + region.height;
    drag = {
      id: event.pointerId,
      clientX: event.clientX,
      clientY: event.clientY,
      start,
      before: region,
      moving: Boolean(inside),
      started: false,
    };
  }

  function followDrag(event) {
    if (!drag || event.pointerId !== drag.id) return;
    drag.started ||=
      Math.abs(event.clientX - drag.clientX) >= MIN_DRAG_PX ||
      Math.abs(event.clientY - drag.clientY) >= MIN_DRAG_PX;
    if (!drag.started) return;
    const { start, before } = drag;
    const point = pictureAt(event);
    const [dx, dy] = [point.x - start.x, point.y - start.y];
    const area = drag.moving
      ? { ...before, x: before.x + dx, y: before.y + dy }
      : {
          x: Math.min(start.x, point.x),
          y: Math.min(start.y, point.y),
          width: Math.abs(dx),
          height: Math.abs(dy),
        };
    setRegion(area, false);
  }

  function endDrag(event) {
    if (!drag || event.pointerId !== drag.id) return;
    followDrag(event);
    const { before, started, moving } = drag;
    drag = null;
    if (!started) return; // a click: the region stays as it was
    const box = regionBox.getBoundingClientRect();
    const sliver = !moving && (box.width < MIN_DRAG_PX || box.height < MIN_DRAG_PX);
    setRegion(sliver ? before : region);
  }

  function cancelDrag() {
    const { before } = drag;
    drag = null;
    setRegion(before);
  }

  // What the next search sends: the selected region of the picture when there is one.
  function searched() {
    return region ? { image: encode(source, region) } : query;
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
          ...searched(),
          top_k: Number(topK.value),
          min_similarity: Number(minSimilarity.value) || 0,
          tags: chosenTags(),
        }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) say(explain(response.status, body), true);
      else render(body);
    } catch {
      say("The search service could not be reached. Check your connection and try again.", true);
    } finally {
      setBusy(false);
      bringOutcomeIntoView();
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

  // After a search the first result (or the message, when there is none) must be in view:
  // on a narrow screen the picture and its controls come first, and after "Find similar" far
  // down the list the new first result is above the window. The page moves as little as it
  // can (the tags just toggled stay in sight), and not at all where it is in view already.
  function bringOutcomeIntoView() {
    const shown = results.firstElementChild ?? message;
    const box = shown.getBoundingClientRect();
    if (box.top >= 0 && box.bottom <= window.innerHeight) return;
    shown.scrollIntoView({ block: "nearest" });
  }

  // Only web pages become "View item" links: never javascript:, data: or the like.
  function isItemPage(text) {
    return typeof text === "string" && /^https?:\/\//i.test(text);
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
    // The visible words come first in the name, as speech input users say them.
    similar.setAttribute("aria-label", `Find similar to ${hit.title}`);
    const itemLink = item.querySelector(".item-link");
    if (isItemPage(hit.link_url)) {
      itemLink.href = hit.link_url;
      itemLink.setAttribute("aria-label", `View item: ${hit.title}`);
    } else {
      itemLink.remove();
    }
    return item;
  }

  // "Find similar" posts a form without JavaScript; with it, search by the image's id.
  results.addEventListener("submit", (event) => {
    event.preventDefault();
    const imageId = Number(event.target.querySelector("[name=image_id]").value);
    query = { image_id: imageId };
    forgetUrl();
    setSource(null); // no picture here to cut a region from
    showPreview(event.target.closest(".result").querySelector(".result-image").src);
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
    if (event.target === fileInput || event.target.closest("label, #region-tools")) return;
    // On the picture a click is the end of a drag, or a region kept as it was.
    if (source && event.target.closest("#region-frame")) return;
    fileInput.click();
  });
  dropzone.addEventListener("keydown", (event) => {
    if (event.target === dropzone && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      fileInput.click();
    }
  });
  dropzone.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || !(drag || region)) return;
    event.preventDefault();
    if (drag) cancelDrag();
    else setRegion(null);
  });
  frame.addEventListener("pointerdown", startDrag);
  frame.addEventListener("pointermove", followDrag);
  frame.addEventListener("pointerup", endDrag);
  frame.addEventListener("pointercancel", (event) => {
    if (drag && event.pointerId === drag.id) cancelDrag();
  });
  frame.addEventListener("keydown", (event) => {
    if (!source || event.altKey || event.ctrlKey || event.metaKey) return; // the browser's keys
    const arrow = ARROWS[event.key];
    if (event.key === "Enter") {
      event.preventDefault();
      search();
    } else if (arrow && !region) {
      event.preventDefault(); // and no scrolling
      selectCentre();
    } else if (arrow) {
      event.preventDefault();
      const [dx, dy] = arrow;
      const stepX = Math.max(1, Math.round(source.width * KEY_STEP));
      const stepY = Math.max(1, Math.round(source.height * KEY_STEP));
      const { x, y, width, height } = region;
      if (event.shiftKey) {
        // Right and Down grow the region, Left and Up shrink it; its top left corner stays.
        const w = Math.max(Math.min(stepX, width), width + dx * stepX);
        const h = Math.max(Math.min(stepY, height), height + dy * stepY);
        setRegion({
          x,
          y,
          width: Math.min(w, source.width - x),
          height: Math.min(h, source.height - y),
        });
      } else {
        setRegion({ x: x + dx * stepX, y: y + dy * stepY, width, height });
      }
    }
  });
  regionSelect.addEventListener("click", () => {
    selectCentre();
    frame.focus();
  });
  regionClear.addEventListener("click", () => {
    setRegion(null);
    frame.focus();
  });
  regionHelp.addEventListener("click", () => {
    const open = regionHelp.getAttribute("aria-expanded") !== "true";
    regionHelp.setAttribute("aria-expanded", String(open));
    regionHint.hidden = !open;
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
    if (item) return choose(item.getAsFile());
    const text = event.clipboardData.getData("text/plain").trim();
    if (!urlInput || typingIn(document.activeElement) || !isWebAddress(text)) return;
    event.preventDefault(); // the whole address replaces what the field held
    chooseUrl(text);
  });
  if (urlInput) {
    urlBox.hidden = false;
    document.getElementById("image-url-use").addEventListener("click", () => {
      chooseUrl(urlInput.value);
    });
    urlInput.addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      event.preventDefault(); // Enter picks the address; Search searches with it
      chooseUrl(urlInput.value);
    });
  }
  // A picture the browser cannot load may still be one the server can fetch.
  preview.addEventListener("error", () => {
    if (query?.url) showPreview(null);
  });

  document.documentElement.classList.add("js");
  button.disabled = true; // until an image is ready
})();
