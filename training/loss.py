"""Label-smoothing cross-entropy of the reference recipe."""
import mindspore as ms
from mindspore import nn, ops


class LabelSmoothingCrossEntropy(nn.LossBase):
    """Softmax cross-entropy against smoothed one-hot targets, averaged over the batch.

    The target is 1 - smoothing on the true class and smoothing / num_classes on every
    other class (REFERENCE.md section 3: on 0.9, off 0.1 / classes).
    """

    def __init__(self, num_classes, smoothing=0.1):
        super().__init__()
        self.num_classes = num_classes
        self.on_value = ms.Tensor(1.0 - smoothing, ms.float32)
        self.off_value = ms.Tensor(smoothing / num_classes, ms.float32)
        self.cross_entropy = nn.SoftmaxCrossEntropyWithLogits(sparse=False, reduction="mean")

    def construct(self, logits, labels):
        targets = ops.one_hot(labels, self.num_classes, self.on_value, self.off_value)
        return self.cross_entropy(logits, targets)
