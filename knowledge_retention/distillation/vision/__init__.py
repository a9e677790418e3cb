"""The paper's image-classification experiment at CPU scale: the UCI digits as an image folder, a ResNet
teacher, ResNet and ViT students trained before (labels only) and after (vanilla KD, FitNet), scored with
the package's engine at α = 0.3.

* :mod:`.data` - the digits written as ``<root>/<split>/<digit>/*.png`` and read with ``datasets``;
* :mod:`.models` - the scales, the ``transformers`` models built from configs, FitNet's regressor;
* :mod:`.train` - the training loop and the three methods;
* :mod:`.run` - the pipeline (:func:`~.run.reproduce_vision`) and the ``reproduce-vision`` command;
* :mod:`.report` - seed statistics, bootstrap intervals, Pearson r, the table; :mod:`.figures` - its two own figures;
* :mod:`.segmentation` - a **synthetic** segmentation demonstration (drawn scenes, SegFormer, α = 0.7).
"""
