// Go's gRPC stack (grpc-go, with the Cloud Tasks stubs Google generates) against the emulator.
// Usage: client HOST:PORT PROJECT LOCATION; prints one JSON line of what it saw.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	taskspb "google.golang.org/genproto/googleapis/cloud/tasks/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func failure(err error) map[string]interface{} {
	s := status.Convert(err)
	return map[string]interface{}{"code": int(s.Code()), "details": s.Message()}
}

func main() {
	target, project, location := os.Args[1], os.Args[2], os.Args[3]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, target, grpc.WithInsecure(), grpc.WithBlock())
	check(err)
	defer conn.Close()
	client := taskspb.NewCloudTasksClient(conn)
	parent := fmt.Sprintf("projects/%s/locations/%s", project, location)
	queueName := parent + "/queues/go-queue"
	out := map[string]interface{}{}

	queue, err := client.CreateQueue(ctx, &taskspb.CreateQueueRequest{
		Parent: parent,
		Queue:  &taskspb.Queue{Name: queueName, RateLimits: &taskspb.RateLimits{MaxDispatchesPerSecond: 3}},
	})
	check(err)
	out["queue"] = map[string]interface{}{"name": queue.Name, "rate": queue.RateLimits.MaxDispatchesPerSecond, "state": queue.State.String()}

	task, err := client.CreateTask(ctx, &taskspb.CreateTaskRequest{
		Parent: queueName,
		Task: &taskspb.Task{
			Name: queueName + "/tasks/from-go",
			MessageType: &taskspb.Task_HttpRequest{HttpRequest: &taskspb.HttpRequest{
				Url: "http://127.0.0.1:9/hook", HttpMethod: taskspb.HttpMethod_PUT,
				Body: []byte("hello from go"), Headers: map[string]string{"X-From": "go"},
			}},
		},
		ResponseView: taskspb.Task_FULL,
	})
	check(err)
	out["task"] = map[string]interface{}{"name": task.Name, "body": string(task.GetHttpRequest().Body), "method": task.GetHttpRequest().HttpMethod.String()}

	listed, err := client.ListTasks(ctx, &taskspb.ListTasksRequest{Parent: queueName})
	check(err)
	names := []string{}
	for _, t := range listed.Tasks {
		names = append(names, t.Name)
	}
	out["listed"] = names

	_, err = client.CreateTask(ctx, &taskspb.CreateTaskRequest{Parent: queueName, Task: &taskspb.Task{
		Name: queueName + "/tasks/from-go", MessageType: &taskspb.Task_HttpRequest{HttpRequest: &taskspb.HttpRequest{Url: "http://127.0.0.1:9/"}},
	}})
	out["duplicate"] = failure(err)
	_, err = client.GetQueue(ctx, &taskspb.GetQueueRequest{Name: parent + "/queues/missing"})
	out["missing"] = failure(err)

	// A body near Cloud Tasks' 1 MiB limit, in and back out: flow control both ways.
	big := bytes.Repeat([]byte("0123456789abcdef"), 900*64)
	made, err := client.CreateTask(ctx, &taskspb.CreateTaskRequest{Parent: queueName, Task: &taskspb.Task{
		MessageType: &taskspb.Task_HttpRequest{HttpRequest: &taskspb.HttpRequest{Url: "http://127.0.0.1:9/big", Body: big}},
	}})
	check(err)
	got, err := client.GetTask(ctx, &taskspb.GetTaskRequest{Name: made.Name, ResponseView: taskspb.Task_FULL})
	check(err)
	out["big"] = bytes.Equal(got.GetHttpRequest().Body, big)

	// Many calls at once on the one connection.
	var wg sync.WaitGroup
	var mu sync.Mutex
	created := map[string]bool{}
	errs := []string{}
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t, err := client.CreateTask(ctx, &taskspb.CreateTaskRequest{Parent: queueName, Task: &taskspb.Task{
				MessageType: &taskspb.Task_HttpRequest{HttpRequest: &taskspb.HttpRequest{Url: fmt.Sprintf("http://127.0.0.1:9/%d", i)}},
			}})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err.Error())
				return
			}
			created[t.Name] = true
		}(i)
	}
	wg.Wait()
	out["concurrent"] = len(created)
	out["errors"] = errs

	paused, err := client.PauseQueue(ctx, &taskspb.PauseQueueRequest{Name: queueName})
	check(err)
	out["paused"] = paused.State.String()
	check(json.NewEncoder(os.Stdout).Encode(out))
}
