// crossline chat service worker, served at /sw.js (scope "/").
// Only the static app shell is cached. Conversation pages (/b/..., /chat/), the
// websocket (/chat/ws) and the API (/v1/...) always go to the network: they are
// per-visitor and must never be stored.
'use strict';

// Bump when any shell file changes so old caches are dropped on activate.
const VERSION = 'v3';
const CACHE = 'crossline-chat-shell-' + VERSION;
const CACHE_PREFIX = 'crossline-chat-shell-';

const SHELL = [
  '/chat/app.js',
  '/chat/app.css',
  '/chat/manifest.webmanifest',
  '/chat/icon.svg',
  '/chat/icon-192.png',
  '/chat/icon-512.png',
];
const SHELL_SET = new Set(SHELL);

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL.map((p) => new Request(p, { cache: 'reload' }))))
      .then(() => self.skipWaiting())
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) =>
        Promise.all(
          keys.filter((k) => k.startsWith(CACHE_PREFIX) && k !== CACHE).map((k) => caches.delete(k))
        )
      )
      .then(() => self.clients.claim())
  );
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  // Not calling respondWith() leaves the request to the browser: network only.
  if (url.origin !== self.location.origin || !SHELL_SET.has(url.pathname)) return;
  event.respondWith(cacheFirst(url.pathname, event));
});

async function cacheFirst(path, event) {
  const cache = await caches.open(CACHE);
  const hit = await cache.match(path);
  // Refresh in the background too, so a forgotten VERSION bump heals on the next load.
  const refresh = fetch(path, { cache: 'no-cache' })
    .then((res) => {
      if (res && res.ok) return cache.put(path, res.clone()).then(() => res);
      return res;
    })
    .catch(() => null);
  if (hit) {
    event.waitUntil(refresh);
    return hit;
  }
  const res = await refresh;
  return res || new Response('', { status: 504, statusText: 'Offline' });
}
