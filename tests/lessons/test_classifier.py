"""The classifier lesson: every claim it prints, on the values it computes."""

import re
from pathlib import Path

import pytest
import torch

from tests.lessons.lesson_runs import lesson_stdout, shown
from torchtutor.lessons import classifier
from torchtutor.runtime.errors import UserError
from torchtutor.vision.models import TutorialNet

CPU = torch.device("cpu")
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


@pytest.fixture(scope="module")
def small():
    """The generated set, smaller than the lesson's, and a net trained on it the notes' way."""
    torch.manual_seed(0)
    data = classifier.generated_set(train_per_class=60, test_per_class=20)
    loaders = classifier.make_loaders(data)
    net = TutorialNet(len(data.classes))
    statistics = classifier.train_network(net, loaders[1], CPU, epochs=2, print_every=50)
    return data, loaders, net, statistics


def test_generated_set_is_balanced_uint8_and_says_so(small):
    data = small[0]
    assert len(data.classes) == 10 and len(set(data.classes)) == 10
    assert data.train_images.shape == (600, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert torch.equal(data.train_labels.bincount(), torch.full((10,), 60))
    assert torch.equal(data.test_labels.bincount(), torch.full((10,), 20))
    assert "generated" in data.source and "not CIFAR-10" in data.source


def test_a_batch_is_four_normalized_images(small):
    data, (trainset, trainloader, _, _), _, _ = small
    images, labels = next(iter(trainloader))
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4,)
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.min() < -0.5 and images.max() > 0.5   # the [-1, 1] range is used
    image, label = trainset[0]
    expected = data.train_images[0].float() / 255 * 2 - 1    # Normalize(0.5, 0.5)
    assert torch.allclose(image, expected, atol=1e-6) and label == int(data.train_labels[0])


def test_training_loss_falls(small):
    statistics = small[3]
    assert [s[:2] for s in statistics] == [(1, 50), (1, 100), (1, 150), (2, 50), (2, 100),
                                           (2, 150)]
    assert statistics[-1][2] < statistics[0][2]


def test_testing_counts_agree_with_the_confusion_matrix(small):
    data, (_, _, testset, testloader), net, _ = small
    correct, total, labels, predicted = classifier.accuracy_on_test_set(net, testloader, CPU)
    assert total == len(testset) == 200
    assert correct == int((labels == predicted).sum())
    assert correct / total > 0.2   # above chance (0.1) on the generated set
    correct_pred, total_pred = classifier.per_class_accuracy(net, testloader, CPU,
                                                             data.classes)
    assert sum(correct_pred.values()) == correct and all(v == 20 for v in total_pred.values())
    by_class = (labels[labels == predicted]).bincount(minlength=10).tolist()
    assert [correct_pred[c] for c in data.classes] == by_class


def test_reloaded_net_and_device_move_give_the_same_outputs(small, tmp_path):
    _, (_, _, _, testloader), net, _ = small
    images, _ = next(iter(testloader))
    reloaded = classifier.save_and_reload(net, tmp_path)
    assert (tmp_path / "cifar_net.pt").is_file()
    with torch.no_grad():
        assert torch.equal(net(images), reloaded(images))
        moved = classifier.demo_device(net, CPU, images)
    assert moved["parameters_on"] == CPU and moved["inputs_on"] == CPU
    assert moved["max_difference"] == 0.0


@pytest.mark.slow
def test_reads_the_shared_cifar10_tree(shared_data):
    data = classifier.load_lesson_data(str(shared_data / "cifar10"), train_per_class=5,
                                       test_per_class=3)
    assert data.classes == CIFAR_CLASSES
    assert torch.equal(data.train_labels.bincount(), torch.full((10,), 5))
    assert torch.equal(data.test_labels.bincount(), torch.full((10,), 3))
    assert (data.train_images.float().flatten(1).std(1) > 5).all()   # real photos
    assert Path(data.source).name == "cifar10-jpeg.tar.gz"


def test_bad_data_is_a_one_line_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not images")
    with pytest.raises(UserError):
        classifier.load_lesson_data(str(tmp_path / "missing"))
    with pytest.raises(UserError):
        classifier.load_lesson_data(str(tmp_path / "notes.txt"))


def test_lesson_prints_true_claims():
    out = lesson_stdout("classifier")
    assert "generated set" in shown(out, "data")
    assert shown(out, "images.shape") == "(4, 3, 32, 32)"
    low, high = (float(v) for v in shown(out, "value range").split(" .. "))
    assert -1.0 <= low < high <= 1.0
    first, last = (float(v) for v in shown(out, "first and last printed loss").split(" -> "))
    assert last < first
    assert shown(out, "reloaded net gives the same outputs") == "True"
    accuracy = int(re.match(r"(\d+) %", shown(out, "Accuracy of the network on the 1000 test "
                                                  "images")).group(1))
    assert accuracy > 10   # better than chance
    assert shown(out, "confusion-matrix accuracy equals the count") == "True"
    assert shown(out, "parameters on") == "cpu" and shown(out, "inputs on") == "cpu"
    assert re.search(r"^10\. Training on GPU: seed the inputs", out, re.M)
    assert "sent (not seeded)" in out   # the notes' slip, corrected in place
