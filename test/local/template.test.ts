import { LOCAL_ACCOUNT, localNames, type Template, TemplateResolver } from '../../local/template';

const template: Template = {
  Resources: {
    Echo: { Type: 'AWS::Lambda::Function', Properties: { Handler: 'index.handler' } },
    Named: { Type: 'AWS::Lambda::Function', Properties: { FunctionName: 'my-function' } },
    Orders: { Type: 'AWS::DynamoDB::Table', Properties: { KeySchema: [] } },
    Jobs: { Type: 'AWS::SQS::Queue', Properties: {} },
    Machine: { Type: 'AWS::StepFunctions::StateMachine', Properties: {} },
    Role: { Type: 'AWS::IAM::Role', Properties: {} },
  },
};

const resolver = new TemplateResolver(template, { region: 'eu-west-1', stackName: 'Demo' });

describe('TemplateResolver', () => {
  test('Ref gives a function, table and queue its local name; a state machine its ARN', () => {
    expect(resolver.resolve({ Ref: 'Echo' })).toBe('Echo');
    expect(resolver.resolve({ Ref: 'Named' })).toBe('my-function');
    expect(resolver.resolve({ Ref: 'Orders' })).toBe('Orders');
    expect(resolver.resolve({ Ref: 'Jobs' })).toBe(`https://sqs.eu-west-1.amazonaws.com/${LOCAL_ACCOUNT}/Jobs`);
    expect(resolver.resolve({ Ref: 'Machine' })).toBe(`arn:aws:states:eu-west-1:${LOCAL_ACCOUNT}:stateMachine:Machine`);
  });

  test('Ref gives the pseudo parameters', () => {
    expect(resolver.resolve(['AWS::Region', 'AWS::AccountId', 'AWS::Partition', 'AWS::URLSuffix', 'AWS::StackName'].map((Ref) => ({ Ref }))))
      .toEqual(['eu-west-1', LOCAL_ACCOUNT, 'aws', 'amazonaws.com', 'Demo']);
  });

  test('Fn::GetAtt Arn gives the local ARN, in both notations', () => {
    expect(resolver.resolve({ 'Fn::GetAtt': ['Echo', 'Arn'] })).toBe(`arn:aws:lambda:eu-west-1:${LOCAL_ACCOUNT}:function:Echo`);
    expect(resolver.resolve({ 'Fn::GetAtt': 'Named.Arn' })).toBe(`arn:aws:lambda:eu-west-1:${LOCAL_ACCOUNT}:function:my-function`);
    expect(resolver.resolve({ 'Fn::GetAtt': ['Orders', 'Arn'] })).toBe(`arn:aws:dynamodb:eu-west-1:${LOCAL_ACCOUNT}:table/Orders`);
    expect(resolver.resolve({ 'Fn::GetAtt': ['Orders', 'StreamArn'] })).toBe(`arn:aws:dynamodb:eu-west-1:${LOCAL_ACCOUNT}:table/Orders`);
    expect(resolver.resolve({ 'Fn::GetAtt': ['Jobs', 'Arn'] })).toBe(`arn:aws:sqs:eu-west-1:${LOCAL_ACCOUNT}:Jobs`);
  });

  test('Fn::GetAtt gives a queue its name and URL, a state machine its name', () => {
    expect(resolver.resolve({ 'Fn::GetAtt': ['Jobs', 'QueueName'] })).toBe('Jobs');
    expect(resolver.resolve({ 'Fn::GetAtt': ['Jobs', 'QueueUrl'] })).toBe(resolver.nameOf('Jobs'));
    expect(resolver.resolve({ 'Fn::GetAtt': ['Machine', 'Name'] })).toBe('Machine');
  });

  test('Fn::Join, Fn::Select and Fn::Split, nested, over resolved values', () => {
    expect(resolver.resolve({ 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':x/', { Ref: 'Orders' }]] })).toBe('arn:aws:x/Orders');
    expect(resolver.resolve({ 'Fn::Select': [1, { 'Fn::Split': ['/', { 'Fn::GetAtt': ['Orders', 'Arn'] }] }] })).toBe('Orders');
    expect(resolver.resolve({ 'Fn::Split': [':', 'a:b'] })).toEqual(['a', 'b']);
  });

  test('Fn::Sub with resources, attributes, pseudo parameters, variables and ${!literals}', () => {
    expect(resolver.resolve({ 'Fn::Sub': '${Echo}|${Jobs.Arn}|${AWS::Region}|${!Literal}' }))
      .toBe(`Echo|arn:aws:sqs:eu-west-1:${LOCAL_ACCOUNT}:Jobs|eu-west-1|\${Literal}`);
    expect(resolver.resolve({ 'Fn::Sub': ['${Who} at ${Orders}', { Who: { Ref: 'Named' } }] })).toBe('my-function at Orders');
  });

  test('resolves deeply, leaving what is not an intrinsic as it is', () => {
    expect(resolver.resolve({ Variables: { TABLE: { Ref: 'Orders' }, N: 3, L: [{ Ref: 'Echo' }, null] } }))
      .toEqual({ Variables: { TABLE: 'Orders', N: 3, L: ['Echo', null] } });
  });

  test('an unknown Ref or GetAtt fails naming it', () => {
    expect(() => resolver.resolve({ Ref: 'Missing' })).toThrow('cannot resolve Ref Missing: no resource Missing in the template');
    expect(() => resolver.resolve({ 'Fn::Join': ['', [{ 'Fn::GetAtt': ['Gone', 'Arn'] }]] })).toThrow(/Fn::GetAtt Gone\.Arn: no resource Gone/);
    expect(() => resolver.resolve({ 'Fn::Sub': 'x-${Nope}' })).toThrow(/Ref Nope/);
    expect(() => resolver.nameOf('Missing')).toThrow('no resource Missing in the template');
  });

  test('an intrinsic it does not know fails naming it', () => {
    expect(() => resolver.resolve({ 'Fn::If': ['C', 'a', 'b'] })).toThrow('the local runner cannot resolve Fn::If');
  });

  test('finds resources by type and by Ref or ARN', () => {
    expect(resolver.resourcesOfType('AWS::Lambda::Function').map(([id]) => id)).toEqual(['Echo', 'Named']);
    expect(resolver.logicalIdOf(resolver.nameOf('Jobs'))).toBe('Jobs');
    expect(resolver.logicalIdOf(resolver.arnOf('Named'))).toBe('Named');
    expect(resolver.logicalIdOf('arn:aws:sqs:eu-west-1:1:Other')).toBeUndefined();
  });

  test('localNames takes explicit names and the given account', () => {
    expect(localNames('T', { Type: 'AWS::DynamoDB::Table', Properties: { TableName: 'orders' } }, 'us-east-1', '111111111111'))
      .toEqual({ ref: 'orders', arn: 'arn:aws:dynamodb:us-east-1:111111111111:table/orders' });
    expect(localNames('R', { Type: 'AWS::IAM::Role' }, 'us-east-1')).toEqual({ ref: 'R', arn: `arn:aws:local:us-east-1:${LOCAL_ACCOUNT}:R` });
  });
});
