// Breakout links and links back to the web chat: claim the chat for this
// browser as soon as the page loads (link previews don't run scripts, so
// they never claim it).
"use strict";
document.getElementById("open-chat").submit();
