"""Digits: a scikit-learn classifier fitted at init() on the bundled 8x8 digits data."""

import nubis


class Digits(nubis.Photon):
    """Classify 8x8 grey-scale digit images (64 numbers, 0..16)."""

    requirements = ["scikit-learn"]
    resources = nubis.Resources(cpu=1, memory="512Mi")

    def init(self):
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
        self.model = LogisticRegression(max_iter=2000).fit(x_train / 16.0, y_train)
        self.accuracy = float(self.model.score(x_test / 16.0, y_test))
        self.sample = x_test[0].tolist()

    @nubis.handler(max_batch_size=64, max_wait_ms=2)
    def predict(self, image: list[float]) -> dict:
        """Batched: `image` arrives as a list of images, one per request."""
        import numpy as np

        pixels = np.asarray(image, dtype=float)
        if pixels.ndim != 2 or pixels.shape[1] != 64:
            raise ValueError("each image must be 64 numbers (8x8 pixels, 0..16)")
        probabilities = self.model.predict_proba(pixels / 16.0)
        return [
            {"label": int(p.argmax()), "probability": float(p.max())} for p in probabilities
        ]

    @nubis.handler(method="GET")
    def info(self) -> dict:
        """Held-out accuracy and a sample image to try."""
        return {"accuracy": self.accuracy, "sample": self.sample}
