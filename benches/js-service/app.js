// A wasi:http 0.2 service: answers every request with a short text, but
// spins on `/spin` (a request that never ends unless its server ends it).
addEventListener('fetch', (event) => {
  const path = new URL(event.request.url).pathname;
  if (path === '/spin') {
    for (;;) {}
  }
  event.respondWith(
    new Response(`hello from js ${path}\n`, {
      headers: { 'content-type': 'text/plain' },
    }),
  );
});
