// nubis console: the storage upload form with a progress bar. Without JS the same form posts
// (and streams) as it is; with JS it goes by XMLHttpRequest, whose upload events give the progress.
"use strict";
(function () {
  function errorText(html, status) {
    const doc = new DOMParser().parseFromString(html, "text/html");
    const found = doc.querySelector(".flash.error");
    return found ? found.textContent.trim() : "upload failed (HTTP " + status + ")";
  }

  document.addEventListener("DOMContentLoaded", function () {
    const form = document.getElementById("upload");
    if (!form) return;
    const bar = document.getElementById("upload-progress");
    const status = document.getElementById("upload-status");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.upload.addEventListener("progress", function (e) {
        if (!e.lengthComputable) return;
        bar.hidden = false;
        bar.value = Math.round((100 * e.loaded) / e.total);
        status.textContent = bar.value + " %";
      });
      xhr.addEventListener("load", function () {
        if (xhr.status >= 200 && xhr.status < 300) {
          status.textContent = "uploaded";
          window.location.assign(xhr.responseURL || window.location.href);
          return;
        }
        bar.hidden = true;
        status.textContent = errorText(xhr.responseText, xhr.status);
      });
      xhr.addEventListener("error", function () {
        bar.hidden = true;
        status.textContent = "upload failed: the connection was lost";
      });
      bar.hidden = false;
      bar.value = 0;
      status.textContent = "0 %";
      xhr.send(new FormData(form));
    });
  });
})();
