"use strict";
// Shows why the last sign-in failed (the server redirects back with ?failed=1).
if (new URLSearchParams(location.search).has("failed")) {
  document.getElementById("failed").hidden = false;
}
