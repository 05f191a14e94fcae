"""Regression renders against golden images: metrics, the judging run, the HTML report, JUnit XML."""
