// A wasi:http 0.2 service: answers every request with a short text.
addEventListener('fetch', (event) =>
  event.respondWith(
    new Response(`hello from js ${new URL(event.request.url).pathname}\n`, {
      headers: { 'content-type': 'text/plain' },
    }),
  ),
);
