"""Looking at results: labeled videos and plots of a result ``.h5`` (see docs/visualize.md).

Numpy, OpenCV and pandas only; matplotlib (optional) is imported when plotting, and for
colormaps when installed.
"""
from dlc_runtime.visualize.labeled_video import (COLOR_BY, LabeledVideo, create_labeled_video,
                                                 labeled_video_path)
from dlc_runtime.visualize.plots import PLOT_NAMES, PlotFiles, plot_folder, plot_trajectories
from dlc_runtime.visualize.poses import PoseTable, VisualizeError
from dlc_runtime.visualize.sources import ResultSource, locate_results

__all__ = ["COLOR_BY", "LabeledVideo", "create_labeled_video", "labeled_video_path",
           "PLOT_NAMES", "PlotFiles", "plot_folder", "plot_trajectories", "PoseTable",
           "VisualizeError", "ResultSource", "locate_results"]
