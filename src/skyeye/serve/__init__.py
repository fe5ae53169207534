"""The three ways to talk with a SkyEye model about an image, on one conversation layer.

- `session`: what every front end shares. `ConversationImage` is an uploaded image as a conversation keeps it
  (resized to the model's input square, with the full image's size and its georeferencing) and places the
  boxes of an answer in its pixels, on the map and in lon/lat; `ImageChat` is one conversation about one image,
  streamed turn by turn on the model's own `Conversation` and its conversation cache.
- `chat`: `skyeye chat`, the terminal front end of an `ImageChat`;
- `web`: `skyeye web`, the Gradio app, one `ImageChat` per browser session;
- `api`: `skyeye serve`, the OpenAI-compatible HTTP API: stateless requests (each carries its whole
  conversation) batched into shared generate calls, each image a `ConversationImage`.

The dependencies point one way: front ends -> `session` -> the model, geo and image layers.
"""
