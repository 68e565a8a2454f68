"""What a reviewer looks at: the model card and the browser review of the MLflow UI.

* :mod:`pac.review.model_card`: the champion's model card (``runs/model_card.md``);
* :mod:`pac.review.browser`: a loopback MLflow server and headless Chromium that check the
  newest flow run's pages and screenshot them;
* :mod:`pac.review.commands`: ``pac figures`` and ``pac review``.

The figures themselves are :mod:`pac.plots` (shared with the flow and the scaling fits).
"""
