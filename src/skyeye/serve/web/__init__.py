"""The SkyEye web app (`skyeye web`): Gradio, built on the same conversation object as `skyeye chat`."""
