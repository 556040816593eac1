// Java's gRPC stack (grpc-java over Netty) against the emulator, with messages serialized by the test.
// Usage: java GrpcCalls HOST PORT < lines of "METHOD BASE64" (one call each) or "MANY N METHOD BASE64"
// (N calls at once); prints a line per input line: "OK BASE64", "ERR CODE DESCRIPTION" or "MANY OKS ERRORS".
import io.grpc.CallOptions;
import io.grpc.ManagedChannel;
import io.grpc.MethodDescriptor;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.stub.ClientCalls;
import java.io.BufferedReader;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

public final class GrpcCalls {
  /** Messages pass through as the bytes the test serialized. */
  static final class Bytes implements MethodDescriptor.Marshaller<byte[]> {
    @Override
    public InputStream stream(byte[] value) {
      return new ByteArrayInputStream(value);
    }

    @Override
    public byte[] parse(InputStream stream) {
      try {
        return stream.readAllBytes();
      } catch (IOException e) {
        throw new RuntimeException(e);
      }
    }
  }

  static MethodDescriptor<byte[], byte[]> method(String name) {
    return MethodDescriptor.<byte[], byte[]>newBuilder()
        .setType(MethodDescriptor.MethodType.UNARY)
        .setFullMethodName("google.cloud.tasks.v2.CloudTasks/" + name)
        .setRequestMarshaller(new Bytes())
        .setResponseMarshaller(new Bytes())
        .build();
  }

  public static void main(String[] args) throws Exception {
    ManagedChannel channel =
        NettyChannelBuilder.forAddress(args[0], Integer.parseInt(args[1]))
            .usePlaintext()
            .maxInboundMessageSize(16 * 1024 * 1024)
            .build();
    CallOptions options = CallOptions.DEFAULT.withDeadlineAfter(60, TimeUnit.SECONDS);
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    try {
      String line;
      while ((line = in.readLine()) != null) {
        String[] parts = line.trim().split(" ");
        if (parts[0].equals("MANY")) {
          int count = Integer.parseInt(parts[1]);
          byte[] request = Base64.getDecoder().decode(parts[3]);
          List<Future<byte[]>> calls = new ArrayList<>();
          for (int i = 0; i < count; i++) {
            calls.add(ClientCalls.futureUnaryCall(channel.newCall(method(parts[2]), options), request));
          }
          int oks = 0;
          int errors = 0;
          for (Future<byte[]> call : calls) {
            try {
              call.get(60, TimeUnit.SECONDS);
              oks++;
            } catch (ExecutionException e) {
              errors++;
            }
          }
          System.out.println("MANY " + oks + " " + errors);
          continue;
        }
        byte[] request = Base64.getDecoder().decode(parts.length > 1 ? parts[1] : "");
        try {
          byte[] answer = ClientCalls.blockingUnaryCall(channel, method(parts[0]), options, request);
          System.out.println("OK " + Base64.getEncoder().encodeToString(answer));
        } catch (StatusRuntimeException e) {
          System.out.println("ERR " + e.getStatus().getCode().value() + " " + e.getStatus().getDescription());
        }
      }
    } finally {
      channel.shutdownNow().awaitTermination(10, TimeUnit.SECONDS);
    }
  }
}
