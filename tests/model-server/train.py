"""Trains the sample's iris classifier: an SVC on scikit-learn's bundled iris data (offline)."""

import sys

import joblib
from sklearn import datasets, svm


def main(out_path: str) -> None:
    iris = datasets.load_iris()
    # gamma="scale" is SVC's default; fixed here so the answer for iris-input.json ([1, 1]) does
    # not depend on a future default change.
    model = svm.SVC(gamma="scale")
    model.fit(iris.data, iris.target)
    joblib.dump(model, out_path)


if __name__ == "__main__":
    main(sys.argv[1])
