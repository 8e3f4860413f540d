"""The clients: a plain Flower ``ClientApp`` (Message API) with its own training loop.
Nothing here is ggl's; the server learns what it needs from the reply's metrics
(``partition-id``, ``num-examples``) and from the train config it sent."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ggl_flower_example.task import Net, load_partition

app = ClientApp()


@app.train()
def train(message: Message, context: Context) -> Message:
    torch.set_num_threads(1)
    config = message.content["config"]
    partition = int(context.node_config["partition-id"])
    images, labels, _ = load_partition(partition, int(context.node_config["num-partitions"]),
                                       int(config["images-per-client"]))
    model = Net()
    model.load_state_dict(message.content["arrays"].to_torch_state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=float(config["lr"]))
    batch = int(config["batch-size"])
    for _ in range(int(config["local-epochs"])):
        for start in range(0, len(images), batch):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images[start:start + batch]),
                                   labels[start:start + batch])
            loss.backward()
            optimizer.step()
    metrics = MetricRecord({"num-examples": len(images), "partition-id": partition,
                            "train-loss": loss.item()})
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()),
                               "metrics": metrics}), reply_to=message)
