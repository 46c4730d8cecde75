"""The whole picture of a child: which agencies reported what, over a rolling window, and the multi-agency concern."""
